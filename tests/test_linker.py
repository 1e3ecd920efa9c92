"""The probabilistic linker: comparison levels, blocking, EM and its configuration errors, on hand-made data."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest
from cdp.conf import ConfigError, load_model
from cdp.conf.identity import IdentityConfig, Linkage
from cdp.conf.model import DataModel
from cdp.identity.linker import (
    candidate_pairs,
    compare,
    expectation_maximisation,
    level_labels,
    prepare,
)

SPEC = Linkage.model_validate({
    "blocking": ["l.surname = r.surname", "l.dob = r.dob AND l.state = r.state"],
    "comparisons": {
        "given": {"column": "given", "kind": "jaro_winkler", "thresholds": [0.92, 0.8]},
        "ssn": {"column": "ssn", "kind": "levenshtein", "thresholds": [1, 2]},
        "dob": {"column": "dob", "kind": "date"},
        "state": {"column": "state", "kind": "exact"},
        "name": {"column": "name", "kind": "name_zh"},
    },
})
COLUMNS = "uid string, given string, surname string, ssn string, dob string, state string, name string"


def test_levels_per_kind(spark):
    records = spark.createDataFrame([
        ("a", "michaela", "neumann", "1234567", "19560409", "nsw", "张伟"),
        ("b", "michael", "neumann", "1234568", "19560408", "nsw", "章伟"),    # JW .975; one edit; one digit; 同音
        ("c", "dicksonx", "smith", "1234598", "19561231", "vic", "李敏"),     # JW .813 vs dixon; two edits; 266 days
        ("d", "dixon", "smith", "7654321", "1956-04-09", "  ", "李明"),       # ISO date = a's; blank state
        ("e", "abc", "jones", None, "19900101", "qld", "李俊若"),
        ("f", "abc", "jones", None, "19900101", "qld", "李小若"),             # a 小-name of 李俊若
    ], COLUMNS)
    pairs = spark.createDataFrame([("a", "b"), ("a", "c"), ("c", "d"), ("a", "d"), ("a", "e"), ("e", "f")],
                                  "uid_l string, uid_r string")
    got = {
        (r["uid_l"], r["uid_r"]): (r["given"], r["ssn"], r["dob"], r["state"], r["name"])
        for r in compare(pairs, prepare(records, SPEC), SPEC).collect()
    }
    # levels: 0 different … top = exact; -1 when a side is null (a blank counts as null)
    assert got == {
        ("a", "b"): (2, 2, 2, 1, 3),    # michaela~michael ≥ .92; ssn one edit; dob one digit; same state; same pinyin
        ("a", "c"): (0, 1, 1, 0, 0),    # dob within a year; 张伟/李敏 unrelated
        ("c", "d"): (1, 0, 1, -1, 2),   # dicksonx~dixon ≥ .8; limin~liming pinyin JW ≥ .9
        ("a", "d"): (0, 0, 3, -1, 0),   # 1956-04-09 == 19560409
        ("a", "e"): (0, -1, 0, 0, 0),
        ("e", "f"): (3, -1, 3, 1, 1),   # 李俊若/李小若: same surname and last character, pinyin JW < .9
    }
    assert level_labels(SPEC.comparisons["name"]) == [
        "different", "same surname and last character", "pinyin jaro_winkler >= 0.9", "same pinyin", "exact"]
    assert level_labels(SPEC.comparisons["given"]) == ["different", "jaro_winkler >= 0.8", "jaro_winkler >= 0.92", "exact"]


def test_candidate_pairs_are_the_union_of_rules_with_the_first_rule(spark):
    records = spark.createDataFrame([
        ("1", "x", "smith", None, "19800101", "nsw", None),
        ("2", "y", "smith", None, "19800101", "nsw", None),  # both rules
        ("3", "z", "smith", None, "19800101", "vic", None),  # surname only
        ("4", "w", "brown", None, "19800101", "nsw", None),  # dob + state only
        ("5", "v", None, None, None, "nsw", None),           # nothing to block on
    ], COLUMNS)
    got = {(r["uid_l"], r["uid_r"]): (r["rule"], sorted(r["rules"]))
           for r in candidate_pairs(prepare(records, SPEC), SPEC, link_only=False).collect()}
    assert got == {
        ("1", "2"): (0, [0, 1]), ("1", "3"): (0, [0]), ("2", "3"): (0, [0]),
        ("1", "4"): (1, [1]), ("2", "4"): (1, [1]),
    }


def test_em_recovers_known_parameters_from_exact_pattern_counts():
    labels = {"a": ["different", "exact"], "b": ["different", "close", "exact"], "c": ["different", "exact"]}
    m = {"a": [0.1, 0.9], "b": [0.05, 0.15, 0.8], "c": [0.3, 0.7]}
    u = {"a": [0.95, 0.05], "b": [0.9, 0.08, 0.02], "c": [0.6, 0.4]}
    share, total = 0.2, 1_000_000
    rows = []
    for la, lb, lc in itertools.product(range(2), range(3), range(2)):
        match = share * m["a"][la] * m["b"][lb] * m["c"][lc]
        other = (1 - share) * u["a"][la] * u["b"][lb] * u["c"][lc]
        rows.append({"a": la, "b": lb, "c": lc, "n": total * (match + other)})
    estimate = expectation_maximisation(pd.DataFrame(rows), u, labels, iterations=500, tolerance=1e-10, smoothing=0.0)
    assert estimate.converged
    assert estimate.match_share == pytest.approx(0.2, abs=1e-4)
    for name in m:
        assert estimate.m[name].tolist() == pytest.approx(m[name], abs=1e-4)


def test_em_ignores_null_levels():
    # The same counts with a third of the pairs missing comparison 'a' (level -1) give the same m for 'b'.
    labels = {"a": ["different", "exact"], "b": ["different", "exact"]}
    u = {"a": [0.9, 0.1], "b": [0.8, 0.2]}
    full = pd.DataFrame([{"a": 1, "b": 1, "n": 300.0}, {"a": 0, "b": 0, "n": 600.0}, {"a": 1, "b": 0, "n": 50.0},
                         {"a": 0, "b": 1, "n": 50.0}])
    nulls = pd.concat([full, pd.DataFrame([{"a": -1, "b": 1, "n": 150.0}, {"a": -1, "b": 0, "n": 300.0}])])
    one = expectation_maximisation(full, u, labels, 200, 1e-10, smoothing=0.0)
    two = expectation_maximisation(nulls, u, labels, 200, 1e-10, smoothing=0.0)
    assert one.m["a"].tolist() == pytest.approx(two.m["a"].tolist(), abs=0.02)
    assert two.m["b"][1] > 0.8


@pytest.mark.parametrize(
    ("probabilistic", "message"),
    [
        ({"comparisons": {"n": {"column": "name", "kind": "jaro_winkler"}}}, "jaro_winkler on 'name' needs thresholds"),
        ({"comparisons": {"n": {"column": "name", "kind": "jaro_winkler", "thresholds": [0.8, 0.9]}}},
         "must go from the strongest agreement to the weakest"),
        ({"comparisons": {"n": {"column": "name", "kind": "exact", "thresholds": [1]}}}, "exact on 'name' takes no thresholds"),
        ({"blocking": ["l.name = r.name"], "comparisons": {"n": {"column": "name", "kind": "exact"}}},
         "every training rule reads 'name', so comparison 'n' cannot be trained"),
        ({"blocking": ["name = name"]}, "rule 'name = name' must compare l.<column> with r.<column>"),
        ({"attributes": {"shoppers": {"name": "name"}}}, "attributes names unknown entity 'shoppers'"),
        ({"attributes": {"orders": {"name": "nickname"}}}, "attributes.orders maps columns ['nickname']"),
        ({"attributes": {"orders": {"name": "receiver_name"}}, "comparisons": {"c": {"column": "city", "kind": "exact"}}},
         "comparison 'c' compares 'city', which no entity under attributes provides"),
        ({"enabled": True}, "an enabled probabilistic engine needs blocking rules and comparisons"),
        ({"enabled": True, "blocking": ["l.a = r.a"], "comparisons": {"b": {"column": "b", "kind": "exact"}}},
         "needs an identifier type 'probabilistic'"),
    ],
)
def test_bad_probabilistic_config_fails_naming_the_file_and_key(tmp_path, probabilistic, message):
    import yaml

    path = tmp_path / "identity.yaml"
    conf = Path(__file__).resolve().parents[1] / "conf"
    # the shipped rules for every declared identifier type, without the probabilistic engine's
    identifiers = yaml.safe_load((conf / "identity.yaml").read_text(encoding="utf-8"))["identifiers"]
    identifiers.pop("probabilistic")
    path.write_text(yaml.safe_dump({"identifiers": identifiers, "probabilistic": probabilistic}, allow_unicode=True),
                    encoding="utf-8")
    with pytest.raises(ConfigError) as failure:
        load_model(path, IdentityConfig, context={"model": load_model(conf / "model.yaml", DataModel)})
    text = str(failure.value)
    assert str(path) in text and "probabilistic" in text and message in text
