"""Bad configuration fails fast with the file, the key and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cdp.conf import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def conf(tmp_path) -> Path:
    target = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", target)
    return target


def edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def test_shipped_conf_is_valid():
    settings = load_settings("local", ROOT / "conf")
    settings.validate_all()
    assert set(settings.sources.sources) == {
        "crm_members", "pos_orders", "ecom_orders", "wechat_events", "app_events", "consent_events"
    }


def test_unknown_normaliser_names_file_key_and_choices(conf):
    edit(conf / "sources.yaml", lambda d: d["sources"]["pos_orders"]["mapping"]["phone"].update(normaliser="phonee"))
    with pytest.raises(ConfigError) as error:
        load_settings("local", conf).validate_all()
    message = str(error.value)
    assert "sources.yaml" in message
    assert "sources.pos_orders.mapping.phone.normaliser" in message
    assert "unknown normaliser 'phonee'" in message and "cn_mobile" in message


def test_mapping_to_a_column_the_source_does_not_deliver(conf):
    edit(conf / "sources.yaml", lambda d: d["sources"]["crm_members"]["mapping"]["email"].update(column="电子邮箱"))
    with pytest.raises(ConfigError, match=r"mapping.email.column '电子邮箱' is not among columns"):
        load_settings("local", conf).validate_all()


def test_missing_required_mapping(conf):
    edit(conf / "sources.yaml", lambda d: d["sources"]["pos_orders"]["mapping"].pop("amount"))
    with pytest.raises(ConfigError, match=r"requires mapping for \['amount'\]"):
        load_settings("local", conf).validate_all()


def test_unknown_profile_lists_the_choices(conf):
    with pytest.raises(ConfigError, match=r"profile 'prod' is not defined.*\['cluster', 'local', 'test'\]"):
        load_settings("prod", conf)


def test_cluster_profile_needs_its_environment(conf, monkeypatch):
    monkeypatch.delenv("CDP_LAKEHOUSE", raising=False)
    with pytest.raises(ConfigError, match=r"profiles.cluster.lakehouse.*CDP_LAKEHOUSE.*export CDP_LAKEHOUSE"):
        load_settings("cluster", conf)


def test_a_publish_bound_below_its_interval_names_both_keys(conf):
    edit(conf / "pipeline.yaml", lambda d: d["stream"].update(publish_seconds=60, publish_max_seconds=30))
    with pytest.raises(ConfigError) as error:
        load_settings("local", conf)
    message = str(error.value)
    assert "pipeline.yaml" in message and "stream" in message
    assert "publish_max_seconds (30) is below publish_seconds (60)" in message


def test_audience_with_undeclared_purpose(conf):
    edit(conf / "audiences.yaml", lambda d: d["audiences"]["high_value_sms"].update(purpose="telepathy"))
    with pytest.raises(ConfigError, match=r"audiences.yaml: key 'audiences.high_value_sms.purpose': 'telepathy' "
                                          r"is not a declared purpose"):
        load_settings("local", conf).validate_all()


def test_audience_rule_naming_an_unknown_tag(conf):
    edit(conf / "audiences.yaml", lambda d: d["audiences"]["winback_sms"]["rule"]["all"][0]["any"].append({"tag": "vip"}))
    with pytest.raises(ConfigError, match=r"audiences.yaml: key 'audiences.winback_sms.rule': "
                                          r"rule.all\[0\].any\[2\]: unknown tag 'vip' \(not in tags.yaml\)"):
        load_settings("local", conf).validate_all()


def test_tag_cycle_names_the_file_and_the_tag(conf):
    edit(conf / "tags.yaml", lambda d: d["tags"]["buyer"].update(value="repeat_buyer OR purchase_count >= 1"))
    edit(conf / "tags.yaml", lambda d: d["tags"]["repeat_buyer"].update(value="buyer AND purchase_count >= 2"))
    with pytest.raises(ConfigError, match=r"(?s)tags.yaml: invalid configuration.*tag 'buyer': dependency cycle "
                                          r"buyer → repeat_buyer → buyer"):
        load_settings("local", conf).validate_all()


def test_survivorship_from_an_unknown_entity(conf):
    edit(conf / "gold.yaml", lambda d: d["survivorship"]["city"]["candidates"].append({"entity": "crm", "value": "city"}))
    with pytest.raises(ConfigError, match=r"(?s)gold.yaml.*survivorship.city.candidates.2.entity.*'crm' is not a silver entity"):
        load_settings("local", conf).validate_all()


def test_broken_blocklist_regex(conf):
    edit(conf / "identity.yaml", lambda d: d["blocklist"]["patterns"].update(phone=["(unclosed"]))
    with pytest.raises(ConfigError, match=r"(?s)identity.yaml.*blocklist.patterns.*is not a regex"):
        load_settings("local", conf).validate_all()


def test_yaml_syntax_error(conf):
    (conf / "identity.yaml").write_text("components: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"identity.yaml: not valid YAML"):
        load_settings("local", conf).validate_all()


def test_identifier_model_names_the_bad_key(conf):
    edit(conf / "identity.yaml", lambda d: d["identifiers"]["phone"].update(max_per_person=0))
    with pytest.raises(ConfigError, match=r"(?s)identity.yaml.*identifiers.phone.max_per_person"):
        load_settings("local", conf).validate_all()


def test_suspicion_anchors_must_be_declared_identifiers(conf):
    edit(conf / "identity.yaml", lambda d: d["suspicious"].update(anchors=["member_id", "passport"]))
    with pytest.raises(ConfigError, match=r"(?s)identity.yaml.*suspicious.anchors names unknown identifier types \['passport'\]"):
        load_settings("local", conf).validate_all()


# ---------------------------------------------------------------- the data model (model.yaml) and mappings


def test_an_unknown_entity_names_the_entities_of_the_model(conf):
    edit(conf / "sources.yaml", lambda d: d["sources"]["pos_orders"].update(entity="purchases"))
    with pytest.raises(ConfigError, match=r"(?s)sources.yaml.*sources.pos_orders.*entity 'purchases' is not one of "
                                          r"\['consent_events', 'customers', 'events', 'leads', 'orders', 'service_tickets'\]"):
        load_settings("local", conf).validate_all()


def test_an_unknown_identifier_type_in_a_mapping(conf):
    edit(conf / "sources.yaml", lambda d: d["sources"]["app_events"].update(
        identifiers=[{"type": "jd_pin", "column": "member_id"}]))
    with pytest.raises(ConfigError, match=r"(?s)sources.yaml.*identifiers\[0\].type 'jd_pin' is not one of the "
                                          r"identifier_types.*Fix: declare it there and in identity.yaml"):
        load_settings("local", conf).validate_all()


def test_a_new_identifier_type_needs_its_rule_in_identity_yaml(conf):
    edit(conf / "model.yaml", lambda d: d["identifier_types"].update(jd_pin={"normaliser": "lower"}))
    with pytest.raises(ConfigError, match=r"(?s)identity.yaml.*identifier types \['jd_pin'\] of conf/model.yaml have "
                                          r"no rule here"):
        load_settings("local", conf).validate_all()


def test_an_identifier_read_with_another_normaliser_than_its_types(conf):
    edit(conf / "sources.yaml", lambda d: d["sources"]["pos_orders"]["mapping"]["phone"].update(normaliser="trim"))
    with pytest.raises(ConfigError, match=r"(?s)mapping.phone: field 'phone' carries identifier type 'phone', whose "
                                          r"normaliser is 'cn_mobile'.*leave `normaliser` out"):
        load_settings("local", conf).validate_all()


def test_a_format_that_does_not_parse_names_the_letter(conf):
    edit(conf / "sources.yaml", lambda d: d["sources"]["pos_orders"]["mapping"]["order_time"].update(
        formats=["dd/MM/yyyy HH:mm:ss.ffff"]))
    with pytest.raises(ConfigError, match=r"(?s)sources.pos_orders.mapping.order_time.formats.*format "
                                          r"'dd/MM/yyyy HH:mm:ss.ffff' uses \['f'\], which are no datetime pattern letters"):
        load_settings("local", conf).validate_all()


def test_a_condition_that_does_not_parse(conf):
    edit(conf / "sources.yaml", lambda d: d["sources"]["app_events"].update(
        identifiers=[{"type": "idfa", "column": "idfa", "when": "lower(os = 'ios'"}]))
    with pytest.raises(ConfigError, match=r"(?s)identifiers.0.when.*condition 'lower\(os = 'ios'' has unbalanced "
                                          r"parentheses"):
        load_settings("local", conf).validate_all()


def test_codes_mapped_onto_values_outside_the_closed_set(conf):
    edit(conf / "sources.yaml", lambda d: d["sources"]["consent_events"]["mapping"]["purpose"].update(
        values={"SMS01": "marketing_sms", "TEL01": "telemarketing"}))
    with pytest.raises(ConfigError, match=r"(?s)mapping.purpose.values maps codes onto \['telemarketing'\], which are "
                                          r"not among the canonical values of 'purpose'"):
        load_settings("local", conf).validate_all()


def test_codes_on_a_field_that_is_no_text(conf):
    edit(conf / "sources.yaml", lambda d: d["sources"]["pos_orders"]["mapping"]["amount"].update(values={"free": "0"}))
    with pytest.raises(ConfigError, match=r"(?s)mapping.amount: values and unmapped apply to string fields; 'amount' "
                                          r"is a decimal"):
        load_settings("local", conf).validate_all()


def test_a_model_field_naming_an_undeclared_code_map(conf):
    edit(conf / "model.yaml", lambda d: d["entities"]["customers"]["fields"]["gender"].update(values="sex"))
    with pytest.raises(ConfigError, match=r"(?s)model.yaml.*entities.customers.fields.gender: values 'sex' is not one "
                                          r"of the value_maps"):
        load_settings("local", conf).validate_all()


def test_docs_model_md_is_the_rendered_model():
    from cdp.cleanse.docs import render

    committed = (ROOT / "docs" / "model.md").read_text(encoding="utf-8")
    assert committed == render(load_settings("local", ROOT / "conf")), \
        "docs/model.md is stale: run `cdp model doc -o docs/model.md`"
