"""Connected components: explicit small graphs, and random graphs checked against networkx."""

from __future__ import annotations

import random

import networkx as nx
import pytest

from cdp.conf.identity import Components
from cdp.identity.components import choose_engine, connected_components, two_phase_components


def components_of(spark, vertices, edges):
    v = spark.createDataFrame([(i,) for i in vertices], "id long")
    e = spark.createDataFrame(edges, "src long, dst long")
    return {r["id"]: r["component"] for r in two_phase_components(v, e).collect()}


def test_chain_star_and_isolated_vertex(spark):
    # 5-4-3-2 chain, a star around 10, a self-loop on 20 and an isolated 30.
    edges = [(5, 4), (4, 3), (3, 2), (10, 11), (12, 10), (13, 10), (20, 20)]
    assert components_of(spark, [2, 3, 4, 5, 10, 11, 12, 13, 20, 30], edges) == {
        2: 2, 3: 2, 4: 2, 5: 2, 10: 10, 11: 10, 12: 10, 13: 10, 20: 20, 30: 30,
    }


def test_negative_ids_take_the_smallest_label(spark):
    # Hashed vertex ids are often negative.
    assert components_of(spark, [-9, 7, 100], [(7, -9), (100, 7)]) == {-9: -9, 7: -9, 100: -9}


def test_no_edges(spark):
    assert components_of(spark, [1, 2], []) == {1: 1, 2: 2}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_graphs_match_networkx(spark, seed):
    rng = random.Random(seed)
    n = 300
    vertices = list(range(n))
    edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(260)]
    # a long path makes many rounds necessary
    edges += [(i, i + 1) for i in range(150, 199)]
    graph = nx.Graph()
    graph.add_nodes_from(vertices)
    graph.add_edges_from(edges)
    expected = {v: min(c) for c in nx.connected_components(graph) for v in c}
    assert components_of(spark, vertices, edges) == expected


def test_auto_engine_falls_back_without_graphframes_jar(spark):
    # On this machine GraphFrames' jar is not on the classpath (see README: Maven mirror lacks it).
    assert choose_engine(spark, Components(engine="auto")) == "dataframe"
    assert choose_engine(spark, Components(engine="dataframe")) == "dataframe"


def test_required_graphframes_engine_fails_with_a_fix(spark):
    with pytest.raises(RuntimeError, match="make jars"):
        choose_engine(spark, Components(engine="graphframes"))


def test_connected_components_reports_the_engine(spark):
    v = spark.createDataFrame([(1,), (2,)], "id long")
    e = spark.createDataFrame([(1, 2)], "src long, dst long")
    labels, engine = connected_components(v, e, Components(engine="dataframe"))
    assert engine == "dataframe"
    assert sorted((r["id"], r["component"]) for r in labels.collect()) == [(1, 1), (2, 1)]
