"""Exports (用前合规): an audience leaves the lakehouse only for a declared purpose, only with the persons
whose consent allows that purpose at the moment of export, and every export is in the audit log.

Consent is read again at export time from silver's consent events (not from the last gold run),
so a withdrawal that has reached silver removes the person from the very next export.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.audit import audit, current_actor
from cdp.conf import Settings
from cdp.lakehouse import table_exists
from cdp.tables import AUDIENCES, IDENTIFIERS, ONEID_MAP, PROFILE, silver_table
from cdp.privacy.consent import CONSENT_STATE_SCHEMA, allowed_for, consent_state
from cdp.privacy.protect import decrypt, load_keys

FORMATS = ("csv", "parquet", "json")


class ExportRefused(RuntimeError):
    """The export was not allowed as asked; it is recorded in ops.audit_log as export_refused."""


@dataclass
class Exported:
    audience: str
    purpose: str
    destination: str
    rows: int  # persons written
    members: int  # in gold.audience_members
    without_consent: int  # members whose consent no longer allows the purpose
    without_contact: int  # allowed, but no contact point of the kind the purpose sends to


def current_consent(spark: SparkSession) -> DataFrame:
    """Consent per one_id and purpose from every event in silver, including events newer than the last
    identity run: those reach their persons through their subject identifier (a withdrawal by phone
    applies to every one_id whose records carry that phone)."""
    table = silver_table("consent_events")
    if not table_exists(spark, table):
        return spark.createDataFrame([], CONSENT_STATE_SCHEMA)
    events = spark.table(table)
    mapped = spark.table(ONEID_MAP).select("source", "record_key", "one_id")
    identifiers = spark.table(IDENTIFIERS).select("source", "record_key", "id_type", "id_value")
    unmapped = events.select("source", "record_key").join(mapped, ["source", "record_key"], "left_anti")
    carriers = identifiers.join(mapped, ["source", "record_key"]).select("id_type", "id_value", "one_id")
    via_subject = (unmapped.join(identifiers, ["source", "record_key"])
                   .join(carriers, ["id_type", "id_value"]).select("source", "record_key", "one_id"))
    return consent_state(events, mapped.unionByName(via_subject).distinct())


def _refuse(spark: SparkSession, message: str, audience: str, purpose: str | None, destination: str,
            actor: str) -> ExportRefused:
    audit(spark, "export_refused", object=audience, purpose=purpose, audience=audience, rows=0,
          destination=destination, status="refused", details={"reason": message}, actor=actor)
    return ExportRefused(message)


def check_request(settings: Settings, audience: str, purpose: str | None, fmt: str) -> str | None:
    """Why the request cannot run (before Spark starts), or None."""
    purposes = settings.privacy.purposes
    if not purpose:
        return (f"export of '{audience}' refused: no purpose declared. Personal data leaves only for a stated "
                f"purpose (PIPL 目的明确). Fix: add --purpose, one of {', '.join(purposes)}.")
    if purpose not in purposes:
        return (f"export of '{audience}' refused: '{purpose}' is not a purpose in privacy.yaml. "
                f"Fix: one of {', '.join(purposes)}.")
    known = settings.audiences.audiences
    if audience not in known:
        return f"export refused: no audience '{audience}'. Fix: one of {', '.join(known)} (audiences.yaml)."
    if known[audience].status != "active":
        return f"export of '{audience}' refused: the audience is {known[audience].status}. Fix: activate it first."
    if fmt not in FORMATS:
        return f"export of '{audience}' refused: format '{fmt}' unknown. Fix: one of {', '.join(FORMATS)}."
    return None


def export_audience(spark: SparkSession, settings: Settings, audience: str, purpose: str | None,
                    destination: str, fmt: str = "csv", actor: str | None = None) -> Exported:
    """Write the audience's currently consenting members (and the purpose's contact) to `destination`."""
    actor = actor or current_actor()
    problem = check_request(settings, audience, purpose, fmt)
    if problem:
        raise _refuse(spark, problem, audience, purpose, destination, actor)
    if not table_exists(spark, AUDIENCES):
        raise _refuse(spark, f"export of '{audience}' refused: gold.audience_members does not exist. "
                             f"Fix: run `cdp run --stage gold` first.", audience, purpose, destination, actor)
    spec = settings.privacy.purposes[purpose]
    members = spark.table(AUDIENCES).where(F.col("audience") == audience).select("one_id").distinct().persist()
    allowed = members.transform(allowed_for(purpose, spec.default, current_consent(spark))).persist()
    keys = load_keys(settings) if spec.contact != "none" else None
    profile = spark.table(PROFILE)
    if spec.contact == "phone":
        contact = {"phone": decrypt(F.col("phone_enc"), keys)}
    elif spec.contact == "email":
        contact = {"email": decrypt(F.col("email_enc"), keys)}
    elif spec.contact == "phone_sha256":  # what ad platforms match on: SHA-256 of the E.164 number
        contact = {"phone_sha256": F.sha2(decrypt(F.col("phone_enc"), keys), 256)}
    else:
        contact = {}
    rows = allowed.join(profile.select("one_id", *[c.alias(n) for n, c in contact.items()]), "one_id", "left")
    for name in contact:
        rows = rows.where(F.col(name).isNotNull())
    rows = rows.select("one_id", *contact, F.lit(audience).alias("audience"), F.lit(purpose).alias("purpose")).persist()
    written = rows.count()
    member_count, allowed_count = members.count(), allowed.count()
    writer = rows.coalesce(1).write.mode("overwrite")
    if fmt == "csv":
        writer.option("header", "true").csv(destination)
    else:
        getattr(writer, fmt)(destination)
    for frame in (rows, allowed, members):
        frame.unpersist()
    result = Exported(audience, purpose, destination, written, member_count, member_count - allowed_count,
                      allowed_count - written)
    audit(spark, "export", object=audience, purpose=purpose, audience=audience, rows=written,
          destination=destination, actor=actor,
          details={"format": fmt, "members": member_count, "without_consent": result.without_consent,
                   "without_contact": result.without_contact, "contact": spec.contact})
    return result


def local_destination(path: str) -> str:
    """Relative local paths are made absolute (Spark would resolve them against its own working dir)."""
    return path if "://" in path else str(Path(path).resolve())
