"""Connected components of the identity graph, by GraphFrames' `connectedComponents`.

Takes vertices `id: long` and undirected edges `src: long, dst: long`; returns `id, component`.
With integral ids, two_phase and graphx label a component with its smallest vertex id;
randomized_contraction with a random long. The algorithm and its settings come from
conf/identity.yaml `components`, chosen by measurement (docs/performance.md).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from cdp.conf.identity import Components

UNTIL_CONVERGENCE = 2**31 - 1  # the Scala API's own default for graphx: Int.MaxValue

def graphframes_missing(spark: SparkSession) -> str | None:
    """Why GraphFrames cannot run here (its JVM classes or its Python module missing), or None."""
    try:
        spark.sparkContext._jvm.java.lang.Class.forName(
            "org.graphframes.GraphFrame", False, spark.sparkContext._jvm.Thread.currentThread().getContextClassLoader()
        )
    except Exception:  # py4j raises a generic Py4JJavaError for ClassNotFoundException
        return "org.graphframes.GraphFrame is not on the classpath"
    try:
        import graphframes  # noqa: F401  (the Python side, graphframes-py, pinned with the jar)
    except ImportError as exc:
        return f"the Python module graphframes does not import ({exc})"
    return None


def require_graphframes(spark: SparkSession) -> None:
    """Raise, naming the fix, when GraphFrames cannot run in this session."""
    missing = graphframes_missing(spark)
    if missing is not None:
        raise RuntimeError(
            f"the identity stage computes connected components with GraphFrames, but {missing}. Fix: let Spark "
            "resolve jars.graphframes_package (from Maven Central, or a repository in CDP_MAVEN_REPOSITORIES), or "
            "stage it with `make jars`; install graphframes-py from requirements/."
        )


def connected_components(vertices: DataFrame, edges: DataFrame, settings: Components) -> tuple[DataFrame, str]:
    """Component labels for every vertex, and what computed them ('graphframes (<algorithm>)')."""
    require_graphframes(vertices.sparkSession)
    return graphframes_components(vertices, edges, settings), f"graphframes ({settings.algorithm})"


def graphframes_components(vertices: DataFrame, edges: DataFrame, settings: Components) -> DataFrame:
    """GraphFrames' connectedComponents with the configured algorithm, AQE threshold and checkpointing."""
    from graphframes import GraphFrame

    spark = vertices.sparkSession
    graph = GraphFrame(vertices.select("id"), edges.select("src", "dst"))
    # GraphFrames runs with adaptive query execution: broadcastThreshold -1 hands skew to AQE, and
    # randomized_contraction (0.11.0) fails without it, overwriting a checkpoint it still reads.
    previous = spark.conf.get("spark.sql.adaptive.enabled")
    spark.conf.set("spark.sql.adaptive.enabled", "true")
    try:
        result = graph.connectedComponents(
            algorithm=settings.algorithm,
            checkpointInterval=settings.checkpoint_interval,
            broadcastThreshold=settings.broadcast_threshold,
            # graphx runs until convergence: the Python API's default (31 rounds) silently cuts a
            # component whose diameter is longer in pieces (tests/test_components.py catches it).
            max_iter=UNTIL_CONVERGENCE,
        )
        result.count()  # materialised (GraphFrames persists it) while AQE is on
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", previous)
    return result.select("id", "component")
