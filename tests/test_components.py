"""Connected components (GraphFrames): explicit small graphs, and each algorithm against networkx on a
graph shaped like the identity graph."""

from __future__ import annotations

import random
import sys

import networkx as nx
import pytest

from cdp.conf.identity import Components
from cdp.identity.components import connected_components, graphframes_components, graphframes_missing


def components_of(spark, vertices, edges, algorithm: str = "two_phase") -> dict[int, int]:
    v = spark.createDataFrame([(i,) for i in vertices], "id long")
    e = spark.createDataFrame(edges, "src long, dst long")
    return {r["id"]: r["component"] for r in graphframes_components(v, e, Components(algorithm=algorithm)).collect()}


def test_chain_star_self_loop_negative_ids_and_an_isolated_vertex(spark):
    # 5-4-3-2 chain, a star around 10, a self-loop on 20, an isolated 30; hashed vertex ids are often negative.
    edges = [(5, 4), (4, 3), (3, 2), (10, 11), (12, 10), (13, 10), (20, 20), (7, -9), (100, 7)]
    assert components_of(spark, [2, 3, 4, 5, 10, 11, 12, 13, 20, 30, -9, 7, 100], edges) == {
        2: 2, 3: 2, 4: 2, 5: 2, 10: 10, 11: 10, 12: 10, 13: 10, 20: 20, 30: 30, -9: -9, 7: -9, 100: -9,
    }


def test_no_edges(spark):
    assert components_of(spark, [1, 2], []) == {1: 1, 2: 2}


def partition(labels: dict[int, int]) -> set[frozenset[int]]:
    """The components as sets of vertices, whatever the labels (randomized_contraction's are random)."""
    groups: dict[int, set[int]] = {}
    for vertex, label in labels.items():
        groups.setdefault(label, set()).add(vertex)
    return {frozenset(g) for g in groups.values()}


def identity_like_graph(seed: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Vertex ids as the identity stage makes them (64-bit hashes, negative ones too), isolated vertices,
    many small components, and one large component around a long chain (many rounds for two_phase)."""
    rng = random.Random(seed)
    ids = list({rng.randrange(-2**63, 2**63) for _ in range(1500)})
    small = [(rng.choice(ids[:900]), rng.choice(ids[:900])) for _ in range(500)]
    chain = [(ids[i], ids[i + 1]) for i in range(900, 1300)]
    hub = [(ids[1300], rng.choice(ids[900:1300])) for _ in range(30)] + [(ids[900], ids[i]) for i in range(1301, 1400)]
    return ids, small + chain + hub  # ids[1400:]: isolated


@pytest.mark.parametrize("algorithm", ["two_phase", "graphx", "randomized_contraction"])
def test_graphframes_algorithms_match_networkx(spark, algorithm):
    vertices, edges = identity_like_graph(seed=7)
    graph = nx.Graph()
    graph.add_nodes_from(vertices)
    graph.add_edges_from(edges)
    expected = {frozenset(c) for c in nx.connected_components(graph)}
    assert max(len(c) for c in expected) >= 500 and sum(len(c) == 1 for c in expected) >= 100
    v = spark.createDataFrame([(i,) for i in vertices], "id long")
    e = spark.createDataFrame(edges, "src long, dst long")
    labels = graphframes_components(v, e, Components(algorithm=algorithm))
    found = {r["id"]: r["component"] for r in labels.collect()}
    assert len(found) == len(vertices)
    assert partition(found) == expected
    if algorithm != "randomized_contraction":  # integral ids: the smallest id labels its component
        assert all(found[v] == min(c) for c in expected for v in c)


def test_without_the_graphframes_module_the_stage_names_the_fix(spark, monkeypatch):
    assert graphframes_missing(spark) is None
    monkeypatch.setitem(sys.modules, "graphframes", None)  # as if graphframes-py were not installed
    assert graphframes_missing(spark).startswith("the Python module graphframes does not import")
    v = spark.createDataFrame([(1,)], "id long")
    e = spark.createDataFrame([], "src long, dst long")
    with pytest.raises(RuntimeError, match=r"the Python module graphframes does not import.*Fix: .*requirements/"):
        connected_components(v, e, Components())


def test_connected_components_names_the_algorithm(spark):
    v = spark.createDataFrame([(1,), (2,), (3,)], "id long")
    e = spark.createDataFrame([(1, 2)], "src long, dst long")
    labels, used = connected_components(v, e, Components(algorithm="graphx"))
    assert used == "graphframes (graphx)"
    assert sorted((r["id"], r["component"]) for r in labels.collect()) == [(1, 1), (2, 1), (3, 3)]
