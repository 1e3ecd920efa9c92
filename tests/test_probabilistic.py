"""The probabilistic engine inside identity resolution, on hand-made persons with known answers."""

from __future__ import annotations

from datetime import date

import pytest
from pyspark.sql import functions as F

from cdp.identity.probabilistic import probabilistic_links
from cdp.identity.graph import resolve_persons

SURNAMES = "王李张刘陈杨黄赵周吴"
GIVEN = "明华强伟芳丽军杰涛斌勇静敏燕磊娟超鹏辉霞"  # twenty characters, twenty different pinyin
CITIES = [(f"省{p}", f"市{p}{c}") for p in "甲乙丙丁戊己庚辛壬癸" for c in "东西"]
FIELDS = ["name", "birth_date", "gender", "phone", "email", "province", "city"]


def _people():
    people = []
    for i in range(200):
        province, city = CITIES[i % 20]
        people.append({
            "name": SURNAMES[i % 10] + GIVEN[i // 10], "birth_date": date(1970 + i % 30, 1 + i % 12, 1 + i % 28).isoformat(),
            "gender": "F" if i % 2 else "M", "phone": f"+86138{i:08d}", "province": province, "city": city,
            "id_card": f"11010119{70 + i % 30:02d}0101{i:03d}X",
        })
    # Person 8 is person 7's namesake in the same city: another birth date, another phone.
    people[8].update(name=people[7]["name"], province=people[7]["province"], city=people[7]["city"])
    return people


def _data(spark):
    people = _people()
    attributes, identifiers, truth = [], [], {}

    def add(source, key, person, fields, ids):
        attributes.append((source, key, *[fields.get(f) for f in FIELDS]))
        identifiers.extend((source, key, t, v) for t, v in ids.items())
        truth[(source, key)] = person

    for i, p in enumerate(people):
        add("crm_members", f"M{i}", i, p, {"member_id": f"M{i}", "phone": p["phone"], "id_card": p["id_card"]})
        order = {k: p[k] for k in ("name", "phone", "province", "city")}
        add("ecom_orders", f"E{i}", i, order, {"phone": p["phone"], "buyer_account": f"tb_{i}"})
    for i in range(5):  # a second membership at another store: same name, birth date, city; no phone
        p = {k: v for k, v in people[i].items() if k != "phone"}
        add("crm_members", f"D{i}", i, p, {"member_id": f"D{i}"})
    for i in (5, 6):  # the same, but with a different 身份证: two valid 身份证 never join
        p = {k: v for k, v in people[i].items() if k != "phone"}
        add("crm_members", f"X{i}", i, p, {"member_id": f"X{i}", "id_card": f"12010119800101{i:03d}X"})
    attrs = spark.createDataFrame(attributes, ", ".join(["source string", "record_key string", *[f"{f} string" for f in FIELDS]]))
    idents = spark.createDataFrame(identifiers, "source string, record_key string, id_type string, id_value string")
    return attrs, idents, truth


def test_probabilistic_links_join_a_second_membership_and_never_a_namesake_or_a_guarded_pair(spark, settings):
    attrs, idents, truth = _data(spark)
    config = settings.identity
    found = []

    def linked(refused):
        found.append(probabilistic_links(spark, config.probabilistic, refused, config.identifier_types, "t", records=attrs))
        return found[0].edges

    records = attrs.select("source", "record_key")
    persons = resolve_persons(records, idents, config, linked)
    clusters, refused_edges = persons.clusters, persons.refused_edges
    cluster = {(r["source"], r["record_key"]): r["cluster"] for r in clusters.collect()}

    def together(a, b):
        return cluster[a] == cluster[b]

    for i in range(5):  # joined only by the probabilistic engine
        assert together(("crm_members", f"D{i}"), ("crm_members", f"M{i}")), i
    for i in (5, 6):  # proposed, but the id_card guard refuses it: deterministic evidence wins
        assert not together(("crm_members", f"X{i}"), ("crm_members", f"M{i}")), i
    assert not together(("crm_members", "M7"), ("crm_members", "M8"))  # namesakes, same city
    # No cluster holds two people.
    people_per_cluster = {}
    for key, c in cluster.items():
        people_per_cluster.setdefault(c, set()).add(truth[key])
    assert max(len(p) for p in people_per_cluster.values()) == 1

    refused_probabilistic = {
        (r["source"], r["record_key"]) for r in refused_edges.where(F.col("id_type") == "probabilistic").collect()
    }
    assert refused_probabilistic & {("crm_members", "X5"), ("crm_members", "X6")} == {("crm_members", "X5"), ("crm_members", "X6")}
    links = found[0].links.collect()
    persons_per_link = {}
    for r in links:
        persons_per_link.setdefault(r["link_id"], set()).add(truth[(r["source"], r["record_key"])])
    assert max(len(p) for p in persons_per_link.values()) == 1  # not one link between two people
    second = [r for r in links if r["record_key"] == "D0"]
    assert second and all(r["match_probability"] >= 0.99 for r in second)
    with_member = {r["link_id"] for r in links if r["record_key"] == "M0"}
    to_member = [r for r in second if r["link_id"] in with_member]  # (D0 may link to M0's order E0 too)
    assert len(to_member) == 1
    assert {c["field"]: c["level"] for c in to_member[0]["comparisons"]}["birth_date"] == "exact"
    spark.catalog.clearCache()


def test_a_frozen_model_scores_as_when_it_was_trained_and_estimates_nothing(spark, settings):
    attrs, _, _ = _data(spark)
    config = settings.identity
    refused = spark.createDataFrame([], "source string, record_key string, id_type string, id_value string")
    trained = probabilistic_links(spark, config.probabilistic, refused, config.identifier_types, "t", records=attrs)
    frozen = probabilistic_links(spark, config.probabilistic, refused, config.identifier_types, "t", records=attrs,
                                 model=trained.result.model)

    def scores(found):
        return sorted((r["link_id"], r["source"], r["record_key"], r["match_weight"]) for r in found.links.collect())

    assert len(scores(trained)) > 10 and scores(frozen) == scores(trained)
    assert {"u_random_sampling", "em"} <= set(trained.result.seconds)
    assert not {"u_random_sampling", "em"} & set(frozen.result.seconds)
    spark.catalog.clearCache()


def test_a_frozen_model_weighs_a_name_by_the_frequencies_it_was_trained_with(spark, settings):
    """Namesakes landing elsewhere make person 0's name common. Scored with the frozen model, person 0's
    own pairs weigh as when the model was trained; frequencies counted on the new data would not. The
    model keeps no value fewer than 5 rows hold and no phone at all."""
    from dataclasses import replace

    attrs, _, _ = _data(spark)
    config = settings.identity
    refused = spark.createDataFrame([], "source string, record_key string, id_type string, id_value string")
    trained = probabilistic_links(spark, config.probabilistic, refused, config.identifier_types, "t", records=attrs)
    model = trained.result.model
    rows = model.frequencies.collect()
    floors = {r["column"]: (r["tf"], r["counted"], r["rows"]) for r in rows if r["value_key"] is None}
    # 407 attribute rows carry a name and a city (200 members, 200 orders, 7 second memberships), 400 a
    # phone. The 199 names (and their pinyin) are each held by fewer than 5 rows: their floor is the
    # average, 407 / 199 rows; every city is held by 5 or more, so its floor is 5 rows; each phone by 2.
    assert floors == {"name": (pytest.approx(1 / 199), False, 407), "name__pinyin": (pytest.approx(1 / 199), False, 407),
                      "city": (pytest.approx(5 / 407), False, 407), "phone": (pytest.approx(2 / 400), True, 400)}
    kept = sorted((r["column"], round(r["tf"] * 407)) for r in rows if r["value_key"] is not None)
    # 20 cities of 10 persons each (a member and an order), the second memberships in cities 0–6, and
    # person 8 moved into person 7's city; no name is held by 5 rows, so none is kept
    assert kept == [("city", 18)] + [("city", 20)] * 11 + [("city", 21)] * 7 + [("city", 22)]

    namesakes = spark.createDataFrame(
        [("crm_members", f"Z{j}", _people()[0]["name"], f"1990-01-{j + 1:02d}", None, None, None, "省乙", "市乙东")
         for j in range(12)], attrs.schema)
    grown = attrs.unionByName(namesakes)

    def weights_of_d0(found):
        return sorted((r["link_id"], r["match_weight"]) for r in found.links.collect() if r["record_key"] == "D0")

    before = weights_of_d0(trained)
    frozen = probabilistic_links(spark, config.probabilistic, refused, config.identifier_types, "t", records=grown, model=model)
    counted = probabilistic_links(spark, config.probabilistic, refused, config.identifier_types, "t", records=grown,
                                  model=replace(model, frequencies=None))
    assert before and weights_of_d0(frozen) == before
    assert [w for _, w in weights_of_d0(counted)] != [w for _, w in before]
    spark.catalog.clearCache()
