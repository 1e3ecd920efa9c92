"""Every table of the lakehouse: its name, its layer and what it holds, in one place.

Modules take table names from here, never from each other; docs/tables.md and the privacy
classification (conf/privacy.yaml) are checked against this list by the tests, so a new table
cannot be forgotten in either. Per-source bronze tables and per-entity silver tables are named by
`bronze_table` and `silver_table`.
"""

from __future__ import annotations

from dataclasses import dataclass

DATABASES = {
    "bronze": "Raw channel exports as delivered, one table per source, with ingestion metadata.",
    "silver": "Cleansed, standardised canonical entities, identifiers and the quarantine.",
    "identity": "The identity graph's outputs: OneID assignments and refused links.",
    "gold": "Customer profiles, tags, consent state and consent-filtered audiences.",
    "ops": "Operational records: job runs, ingestion log, quality metrics.",
}


@dataclass(frozen=True)
class Table:
    name: str  # database.table
    purpose: str

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]


# bronze's own columns beside the delivered ones (docs/tables.md, bronze)
CORRUPT_RECORD = "_corrupt_record"  # the whole line when it could not be parsed, else null
# which file (its modification time, the record's line in it), which run, when: the first three order
# re-sent records (the latest delivery wins)
INGEST_COLUMNS = {"_file": "string", "_file_modified_at": "timestamp", "_line": "bigint", "_batch_id": "string",
                  "_ingested_at": "timestamp"}


def bronze_table(source: str) -> str:
    """A source's bronze table: its rows as delivered."""
    return f"bronze.{source}"


def silver_table(entity: str) -> str:
    """An entity's silver table: canonical, cleansed rows of every source mapped onto it."""
    return f"silver.{entity}"


def daily_table(entity: str) -> str:
    """The per-person daily summary of an entity the tags count over: what they read instead of silver."""
    return f"gold.{entity}_daily"


QUARANTINE = "silver.quarantine"
IDENTIFIERS = "silver.identifiers"

ONEID_MAP = "identity.oneid_map"
REFUSED = "identity.suspicious_identifiers"
VIOLATIONS = "identity.violations"
HOUSEHOLDS = "identity.households"
STEWARD_RULES = "identity.steward_rules"
REGISTRY = "identity.registry"
CHANGES = "identity.changes"
LINKS = "identity.probabilistic_links"
WEIGHTS = "identity.match_weights"
MODELS = "identity.models"
MODEL_FREQUENCIES = "identity.model_frequencies"

PROFILE = "gold.customer_profile"
IDENTITY_MAP = "gold.identity_map"
TAGS = "gold.customer_tags"
TAG_HISTORY = "gold.tag_history"
TAG_CATALOG = "gold.tag_catalog"
CONSENT = "gold.consent_state"
AUDIENCES = "gold.audience_members"
AUDIENCE_HISTORY = "gold.audience_history"
AUDIENCE_RUNS = "gold.audience_runs"
REALTIME_EVENTS = "gold.realtime_events"
REALTIME_TAGS = "gold.realtime_tags"
REALTIME_CONSENT = "gold.realtime_consent"
ACTIVATION_EVENTS = "gold.activation_events"

JOB_RUNS = "ops.job_runs"
INGEST_LOG = "ops.ingest_log"
SCHEMA_DRIFT = "ops.schema_drift"
ROW_ACCOUNTING = "ops.row_accounting"
STAGE_CURSORS = "ops.stage_cursors"
QUALITY_METRICS = "ops.quality_metrics"
AUDIT_LOG = "ops.audit_log"
ERASURE_LEDGER = "ops.erasure_ledger"
STREAM_PROGRESS = "ops.stream_progress"
ACTIVATION_CURSORS = "ops.activation_cursors"

# How `cdp maintain` lays out the tables read by person or by audience: OPTIMIZE … ZORDER BY these
# columns, the only ones Delta keeps per-file statistics for (delta.dataSkippingStatsColumns). Each is
# a pseudonymous id, a code or a date: identifiers and contact data stay out of the Delta log.
LAYOUT: dict[str, tuple[str, ...]] = {
    ONEID_MAP: ("one_id",),
    CHANGES: ("one_id",),
    PROFILE: ("one_id",),
    TAGS: ("one_id",),
    TAG_HISTORY: ("one_id",),
    CONSENT: ("one_id",),
    AUDIENCES: ("audience", "one_id"),
    AUDIENCE_HISTORY: ("audience", "one_id"),
}

TABLES: tuple[Table, ...] = (
    Table(QUARANTINE, "every row silver refused, with the rule, the reason and the raw payload"),
    Table(IDENTIFIERS, "every normalised identifier of every silver record"),
    Table(ONEID_MAP, "every silver record's one_id"),
    Table(REFUSED, "identifier values refused as links before the graph, with the evidence"),
    Table(VIOLATIONS, "record–identifier links the over-merge guards refused, and why"),
    Table(HOUSEHOLDS, "weak values (a family's phone) shared by persons the attribute veto kept apart"),
    Table(STEWARD_RULES, "stewards' must-link and must-not-link rules between two records, applied by every run"),
    Table(REGISTRY, "every one_id ever issued: active, or retired and merged into which"),
    Table(CHANGES, "new, merged, split and removed one_ids per run, with their causes"),
    Table(LINKS, "the probabilistic engine's links, with the score and the field comparisons"),
    Table(WEIGHTS, "the probabilistic model the last run scored with: m, u and the weight of each comparison level"),
    Table(MODELS, "every version of the probabilistic model: parameters, training figures, why and when trained"),
    Table(MODEL_FREQUENCIES, "each model version's frozen value frequencies: hashed values held by at least 5 attribute rows"),
    Table(PROFILE, "one row per one_id: the golden record with provenance, and the 360° view"),
    Table(IDENTITY_MAP, "each one_id's identifiers (主账号-子账号), sensitive values hashed"),
    Table(TAGS, "tags per one_id (标签)"),
    Table(TAG_HISTORY, "when each person entered and left each tag value (SCD2)"),
    Table(TAG_CATALOG, "the tag library (标签库): definitions, owners, versions, usage and coverage"),
    Table(CONSENT, "consent per one_id and purpose, the most restrictive across a person's identities"),
    Table(AUDIENCES, "audience members (人群圈选), consent-filtered for each audience's purpose"),
    Table(AUDIENCE_HISTORY, "when each person entered and left each audience (SCD2)"),
    Table(AUDIENCE_RUNS, "each audience's size, entries and exits per gold run"),
    Table(REALTIME_EVENTS, "the events `cdp stream` saw in the last keep_days days, resolved to a one_id (or a provisional one)"),
    Table(REALTIME_TAGS, "the realtime tags of each person with recent events, current to the stream's last publish"),
    Table(REALTIME_CONSENT, "the consent records `cdp stream` saw, resolved to a person: checked at send time until the daily run folds them in"),
    Table(ACTIVATION_EVENTS, "every audience entry and exit (daily and real-time), each with its idempotency key; change feed on"),
    Table(JOB_RUNS, "one row per stage run: status, metrics, rows read and written"),
    Table(INGEST_LOG, "every landed file ingested, with its size, modification time and rows"),
    Table(SCHEMA_DRIFT, "landed files whose columns differ from the declared ones"),
    Table(ROW_ACCOUNTING, "per silver run and source: landed = silver + quarantined + duplicates"),
    Table(STAGE_CURSORS, "per stage and input table: the Delta version its last run consumed, and under which configuration"),
    Table(QUALITY_METRICS, "one row per quality rule per silver run"),
    Table(AUDIT_LOG, "who did what with personal data (append-only)"),
    Table(ERASURE_LEDGER, "hashed tombstones of erased subjects' identifiers"),
    Table(STREAM_PROGRESS, "one row per stream batch: rows, refused, persons, latency from landing"),
    Table(ACTIVATION_CURSORS, "per destination: the activation log version delivered up to, and what was sent and refused"),
)
BY_NAME = {t.name: t for t in TABLES}


def in_layer(layer: str) -> list[str]:
    """The fixed tables of one layer (without the per-source bronze and per-entity silver tables)."""
    return [t.name for t in TABLES if t.layer == layer]
