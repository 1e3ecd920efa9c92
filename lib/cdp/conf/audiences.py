"""conf/audiences.yaml: audiences (人群圈选), their purpose, and their rules, compiled to one Spark SQL condition.

A rule is a tree:

    all: [rule, ...]          every one holds (AND)
    any: [rule, ...]          at least one holds (OR)
    not: rule                 it does not hold (NOT)
    tag: CODE  [op: value]    a tag of gold.customer_tags; a boolean tag alone means "has the tag"
    field: NAME op: value     a column of gold.customer_profile
    sql: "..."                Spark SQL over `tag.<code>`, `profile.<column>` and run_date

Comparisons: eq, ne, in, not_in, gt, gte, lt, lte, between [low, high], is_null (true/false),
within_days N (a time in the N days up to the run date), before / after (a date).
The condition is evaluated over a row `(one_id, run_date, profile struct, tag struct)`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from cdp.conf.base import Strict
from cdp.conf.tags import TagLibrary

COMPARISONS = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
OPERATORS = (*COMPARISONS, "in", "not_in", "starts_with", "between", "is_null", "within_days", "before", "after")


class Audience(Strict):
    name_zh: str
    description: str
    owner: str
    purpose: str
    status: Literal["active", "paused"] = "active"
    rule: dict[str, Any]  # all / any / not / a condition: see the module's docstring


class AudiencesConfig(Strict):
    audiences: dict[str, Audience]


class RuleError(ValueError):
    """A malformed audience rule: says where in the rule and what is wrong."""


def literal(value: Any) -> str:
    """A YAML scalar as a Spark SQL literal."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMP'{value.isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"DATE'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise RuleError(f"{value!r} is not a number, text, date or true/false")


def _date(value: Any, where: str) -> str:
    if isinstance(value, (date, datetime)):
        return literal(value)
    try:
        return literal(date.fromisoformat(str(value)))
    except ValueError as exc:
        raise RuleError(f"{where}: '{value}' is not a date (YYYY-MM-DD)") from exc


def _condition(node: dict[str, Any], tags: TagLibrary, profile_fields: set[str] | None, where: str) -> str:
    subject_keys = [k for k in ("tag", "field") if k in node]
    if len(subject_keys) != 1:
        raise RuleError(f"{where}: a condition names exactly one `tag` or `field`")
    kind = subject_keys[0]
    name = node[kind]
    if kind == "tag":
        if name not in tags.tags:
            raise RuleError(f"{where}: unknown tag '{name}' (not in tags.yaml)")
        column = f"tag.`{name}`"
    else:
        if profile_fields is not None and name not in profile_fields:
            raise RuleError(f"{where}: unknown profile field '{name}'; one of {sorted(profile_fields)}")
        column = f"profile.`{name}`"
    operators = [k for k in node if k != kind]
    unknown = [k for k in operators if k not in OPERATORS]
    if unknown:
        raise RuleError(f"{where}: unknown comparison {unknown}; one of {list(OPERATORS)}")
    if not operators:
        if kind == "tag" and tags.tags[name].type == "boolean":
            return f"({column} IS TRUE)"
        raise RuleError(f"{where}: '{name}' needs a comparison ({', '.join(OPERATORS)}); "
                        "only a boolean tag stands alone")
    if len(operators) > 1:
        raise RuleError(f"{where}: one comparison per condition, found {operators}; combine with all/any")
    op, value = operators[0], node[operators[0]]
    if op in COMPARISONS:
        return f"({column} {COMPARISONS[op]} {literal(value)})"
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise RuleError(f"{where}: `{op}` takes a non-empty list")
        values = ", ".join(literal(v) for v in value)
        return f"({column} {'NOT IN' if op == 'not_in' else 'IN'} ({values}))"
    if op == "starts_with":
        if not isinstance(value, str) or not value:
            raise RuleError(f"{where}: `starts_with` takes a non-empty text")
        return f"startswith({column}, {literal(value)})"
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise RuleError(f"{where}: `between` takes [low, high]")
        return f"({column} BETWEEN {literal(value[0])} AND {literal(value[1])})"
    if op == "is_null":
        return f"({column} IS {'' if value else 'NOT '}NULL)"
    if op == "within_days":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RuleError(f"{where}: `within_days` takes a whole number of days ≥ 1")
        return f"(to_date({column}) > date_sub(run_date, {value}) AND to_date({column}) <= run_date)"
    comparison = "<" if op == "before" else ">"
    return f"(to_date({column}) {comparison} {_date(value, where)})"


def compile_rule(rule: Any, tags: TagLibrary, profile_fields: set[str] | None = None, where: str = "rule") -> str:
    """The rule as one Spark SQL condition; RuleError says where it is malformed."""
    if not isinstance(rule, dict) or not rule:
        raise RuleError(f"{where}: expected a mapping (all / any / not / tag / field / sql)")
    if "all" in rule or "any" in rule:
        key = "all" if "all" in rule else "any"
        if len(rule) != 1:
            raise RuleError(f"{where}: `{key}` stands alone; put other keys inside its list")
        parts = rule[key]
        if not isinstance(parts, list) or not parts:
            raise RuleError(f"{where}.{key}: expected a non-empty list of rules")
        joined = f" {'AND' if key == 'all' else 'OR'} ".join(
            compile_rule(part, tags, profile_fields, f"{where}.{key}[{i}]") for i, part in enumerate(parts)
        )
        return f"({joined})"
    if "not" in rule:
        if len(rule) != 1:
            raise RuleError(f"{where}: `not` stands alone")
        return f"(NOT coalesce({compile_rule(rule['not'], tags, profile_fields, f'{where}.not')}, FALSE))"
    if "sql" in rule:
        if len(rule) != 1 or not isinstance(rule["sql"], str) or not rule["sql"].strip():
            raise RuleError(f"{where}: `sql` stands alone and holds a condition")
        return f"({rule['sql']})"
    return _condition(rule, tags, profile_fields, where)


def referenced_tags(rule: Any) -> set[str]:
    """Tag codes a rule names in `tag:` conditions."""
    if isinstance(rule, dict):
        found = {rule["tag"]} if isinstance(rule.get("tag"), str) else set()
        for value in rule.values():
            found |= referenced_tags(value)
        return found
    if isinstance(rule, list):
        return set().union(*(referenced_tags(v) for v in rule)) if rule else set()
    return set()
