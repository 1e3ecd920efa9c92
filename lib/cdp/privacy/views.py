"""Role views (最小权限): one SQL schema of views per role in privacy.yaml, built from the column
classification, so what a role sees is decided in one place and granted on one object.

- a column whose level the role sees `clear` is selected as stored;
- a level the role sees `masked` goes through the column's mask (138****8000, 张*);
- any other level is left out of the view;
- `consented_only`: rows carrying a `purpose` (audience members) are kept only while the person's
  consent allows that purpose now (opt-in: granted; opt-out: not withdrawn).

On a cluster the views are what gets granted (Unity Catalog `GRANT SELECT ON SCHEMA analyst`,
Apache Ranger policies on the `analyst` database); the gold tables themselves are granted to
stewards and jobs only.
"""

from __future__ import annotations

import hashlib
import logging

from pyspark.sql import SparkSession

from cdp.audit import audit, last_details
from cdp.conf import ConfigError, Settings
from cdp.conf.privacy import PrivacyConfig, mask_sql
from cdp.lakehouse import sql_string, table_exists
from cdp.privacy.consent import allows_sql
from cdp.tables import CONSENT

log = logging.getLogger(__name__)


def unclassified(privacy: PrivacyConfig, table: str, columns: list[str]) -> list[str]:
    return [c for c in columns if privacy.column(table, c) is None]


def check_classified(spark: SparkSession, settings: Settings, tables: list[str]) -> None:
    """Every column of these gold tables has a level in privacy.yaml, or a ConfigError naming them."""
    for table in tables:
        if not table_exists(spark, table):
            continue
        missing = unclassified(settings.privacy, table, spark.table(table).columns)
        if missing:
            raise ConfigError(
                f"{settings.conf_dir / 'privacy.yaml'}: key 'classification.{table}' does not classify "
                f"column(s) {missing}. Fix: give each a level (public, internal, sensitive, highly_sensitive)."
            )


def _consented_rows(privacy: PrivacyConfig) -> str:
    """FROM-clause tail and WHERE over alias m (one_id, purpose): the person's consent allows m.purpose now."""
    cases = " ".join(f"WHEN {sql_string(p)} THEN {allows_sql('c.status', d)}" for p, d in privacy.defaults.items())
    return (f" LEFT JOIN {CONSENT} c ON c.one_id = m.one_id AND c.purpose = m.purpose"
            f" WHERE CASE m.purpose {cases} ELSE false END")


def view_definitions(spark: SparkSession, settings: Settings) -> dict[str, str]:
    """role.table → the SELECT of its view (only for gold tables that exist)."""
    privacy = settings.privacy
    definitions = {}
    for role_name, role in privacy.roles.items():
        for table in role.tables:
            if not table_exists(spark, table):
                continue
            columns = spark.table(table).columns  # classified: build_role_views checks every gold table first
            selected = []
            for column in columns:
                entry = privacy.column(table, column)
                if entry.level in role.clear:
                    selected.append(f"m.`{column}`")
                elif entry.level in role.masked:
                    selected.append(f"{mask_sql(entry.mask, f'm.`{column}`')} AS `{column}`")
            where = ""
            if role.consented_only and {"one_id", "purpose"} <= set(columns):
                where = _consented_rows(privacy)
            definitions[f"{role_name}.{table.split('.', 1)[1]}"] = (
                f"SELECT {', '.join(selected)} FROM {table} m{where}")
    return definitions


def build_role_views(spark: SparkSession, settings: Settings) -> list[str]:
    """Create or replace the roles' views when a definition changed since the last build or a view is
    missing; an audit row when any definition changed. Returns the views."""
    check_classified(spark, settings, [f"gold.{t.name}" for t in spark.catalog.listTables("gold")])
    definitions = view_definitions(spark, settings)
    fingerprints = {v: hashlib.sha256(s.encode("utf-8")).hexdigest()[:16] for v, s in definitions.items()}
    previous = (last_details(spark, "role_views") or {}).get("views", {})
    if fingerprints == previous and set(definitions) <= existing_views(spark, settings):
        return sorted(definitions)  # every view already selects what it would now (its columns are in its text)
    for role_name in settings.privacy.roles:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {role_name}")
    for view, select in definitions.items():
        spark.sql(f"CREATE OR REPLACE VIEW {view} AS {select}")
    if fingerprints != previous:
        changed = sorted(v for v in fingerprints.keys() | previous.keys() if fingerprints.get(v) != previous.get(v))
        audit(spark, "role_views", object=",".join(sorted(settings.privacy.roles)), rows=len(fingerprints),
              details={"views": fingerprints, "changed": changed})
        log.info("privacy: role views changed: %s", changed)
    return sorted(definitions)


def existing_views(spark: SparkSession, settings: Settings) -> set[str]:
    """role.view for every view the roles' databases hold now."""
    return {f"{role}.{t.name}" for role in settings.privacy.roles if spark.catalog.databaseExists(role)
            for t in spark.catalog.listTables(role) if t.tableType == "VIEW"}
