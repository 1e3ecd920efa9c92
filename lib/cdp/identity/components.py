"""Connected components of the identity graph: GraphFrames when its jar is present, else the same
two-phase (large-star / small-star, Kiveris et al., SoCC 2014) algorithm written on DataFrames.

Both take vertices `id: long` and undirected edges `src: long, dst: long`, and return
`id, component` where component is the smallest vertex id of the component.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.conf.identity import Components

log = logging.getLogger(__name__)


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


def graphframes_available(spark: SparkSession) -> bool:
    return graphframes_missing(spark) is None


def choose_engine(spark: SparkSession, settings: Components) -> str:
    if settings.engine == "dataframe":
        return "dataframe"
    missing = graphframes_missing(spark)
    if missing is None:
        return "graphframes"
    if settings.engine == "auto":
        log.warning("identity: GraphFrames cannot run (%s); using the DataFrame engine", missing)
        return "dataframe"
    raise RuntimeError(
        f"conf/identity.yaml asks for components.engine: graphframes, but {missing}. Fix: let Spark resolve "
        "jars.graphframes_package (from Maven Central, or a repository in CDP_MAVEN_REPOSITORIES), or stage it "
        "with `make jars`; install graphframes-py from requirements/; or set engine: auto."
    )


def connected_components(vertices: DataFrame, edges: DataFrame, settings: Components) -> tuple[DataFrame, str]:
    """Component labels for every vertex, and the name of the engine that computed them."""
    spark = vertices.sparkSession
    engine = choose_engine(spark, settings)
    if engine == "graphframes":
        return graphframes_components(vertices, edges, settings), engine
    return two_phase_components(vertices, edges, settings.checkpoint_interval), engine


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
        )
        result.count()  # materialised (GraphFrames persists it) while AQE is on
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", previous)
    return result.select("id", "component")


def _undirected(edges: DataFrame) -> DataFrame:
    """Edges as (hi, lo) pairs: one row per undirected edge, self-loops dropped."""
    return (
        edges.select(F.greatest("src", "dst").alias("hi"), F.least("src", "dst").alias("lo"))
        .where(F.col("hi") != F.col("lo"))
        .distinct()
    )


def large_star(edges: DataFrame) -> DataFrame:
    """Every vertex's larger neighbours are re-attached to the smallest vertex of its neighbourhood."""
    adjacency = edges.select(F.col("hi").alias("u"), F.col("lo").alias("v")).unionByName(
        edges.select(F.col("lo").alias("u"), F.col("hi").alias("v"))
    )
    smallest = adjacency.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
    return (
        adjacency.join(smallest, "u")
        .where(F.col("v") > F.col("u"))
        .select(F.col("v").alias("hi"), F.col("m").alias("lo"))
        .distinct()
    )


def small_star(edges: DataFrame) -> DataFrame:
    """Every vertex and its smaller neighbours are re-attached to the smallest of them."""
    smallest = edges.groupBy("hi").agg(F.min("lo").alias("m"))
    neighbours = edges.join(smallest, "hi").select(F.col("lo").alias("hi"), F.col("m").alias("lo"))
    own = smallest.select(F.col("hi"), F.col("m").alias("lo"))
    return neighbours.unionByName(own).where(F.col("hi") != F.col("lo")).distinct()


def is_star_forest(edges: DataFrame) -> bool:
    """Converged when every vertex has one parent and no parent has a parent of its own."""
    stats = edges.agg(
        F.count("*").alias("edges"),
        F.count_distinct("hi").alias("children"),
    ).collect()[0]
    if stats["edges"] != stats["children"]:
        return False
    parents = edges.select(F.col("lo").alias("hi")).distinct()
    return parents.join(edges.select("hi"), "hi", "left_semi").limit(1).count() == 0


def two_phase_components(
    vertices: DataFrame, edges: DataFrame, checkpoint_interval: int = 2, max_iterations: int = 100
) -> DataFrame:
    """Alternate large-star and small-star until the graph is a forest of stars around each minimum."""
    current = _undirected(edges).persist()
    for iteration in range(1, max_iterations + 1):
        following = small_star(large_star(current))
        # Cut the lineage now and then: each round adds joins, and a long plan is slow to plan and to recover.
        following = following.checkpoint() if iteration % max(checkpoint_interval, 1) == 0 else following.persist()
        converged = is_star_forest(following)  # materialises `following` before its input is released
        current.unpersist()
        current = following
        if converged:
            log.info("two-phase connected components converged after %d rounds", iteration)
            break
    else:
        raise RuntimeError(f"connected components did not converge in {max_iterations} rounds")
    parent = current.select(F.col("hi").alias("id"), F.col("lo").alias("parent"))
    labelled = vertices.select("id").distinct().join(parent, "id", "left").select(
        "id", F.coalesce("parent", "id").alias("component")
    )
    return labelled
