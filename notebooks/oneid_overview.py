# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # OneID and data-quality overview
#
# Can the customer view be trusted? This notebook reads the catalog after a pipeline run
# (`make demo`) and answers, one chart each:
#
# 1. how many records each source delivered, and to how many persons (OneIDs) they belong;
# 2. how many records make up a person;
# 3. which identifier values were refused as links (placeholders, shared devices, junk ids);
# 4. which rows were quarantined, by source and reason;
# 5. whether every landed row is accounted for (row accounting);
# 6. how each data-quality rule's failure rate moves over the silver runs.
#
# Each chart's data is a pandas DataFrame (`oneid_coverage`, `records_per_oneid`,
# `refused_identifiers`, `quarantine`, `row_accounting`, `quality_trend`), and each chart is
# written as a PNG to `$CDP_NOTEBOOK_OUT` (default `build/notebooks/`). The queries are those of
# `docs/sql-cookbook.md`; `docs/tables.md` describes every column.

# %%
from contextlib import ExitStack

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

import nbkit

opened = ExitStack()
spark = nbkit.session(opened)

# %% [markdown]
# ## OneID coverage per source
#
# Every silver record gets a OneID (`identity.oneid_map`). For each source, the bars compare
# the records it delivered with the distinct persons they resolve to: a source whose records
# collapse onto few persons (events, orders) is one whose customers come back; the title gives
# the whole base — all records, and the persons they are.

# %%
oneid_coverage = nbkit.query(spark, """
    SELECT source, count(*) AS records, count(DISTINCT one_id) AS persons
    FROM identity.oneid_map GROUP BY source ORDER BY records DESC""")
oneid_coverage["records_per_person"] = (oneid_coverage.records / oneid_coverage.persons).round(2)
all_persons = spark.table("gold.customer_profile").count()
nbkit.show(oneid_coverage, "OneID coverage per source")

# %%
fig, ax = plt.subplots(figsize=(8, 4))
positions = range(len(oneid_coverage))
ax.barh([y - 0.2 for y in positions], oneid_coverage.records, height=0.4, label="records")
ax.barh([y + 0.2 for y in positions], oneid_coverage.persons, height=0.4, label="persons (OneIDs)")
for container in ax.containers:
    ax.bar_label(container, fmt="{:,.0f}", padding=2, fontsize=8)
ax.set_yticks(list(positions), oneid_coverage.source)
ax.invert_yaxis()
ax.legend(loc="lower right")
ax.set_title(f"{oneid_coverage.records.sum():,} records resolve to {all_persons:,} persons")
nbkit.save(fig, "oneid_coverage")

# %% [markdown]
# ## Records per OneID
#
# How fragmented the customer base would be without OneID: each bar counts the persons made of
# that many records (`record_count` in `gold.customer_profile`). A long tail to the right is
# normal for frequent buyers; a lone bar far out is worth a look with
# `cdp explain --one-id ID` — it may be strangers joined by a shared identifier.

# %%
records_per_oneid = nbkit.query(spark, """
    SELECT record_count, count(*) AS persons FROM gold.customer_profile
    GROUP BY record_count ORDER BY record_count""")
nbkit.show(records_per_oneid, "Records per OneID")

# %%
fig, ax = plt.subplots(figsize=(9, 3.5))
ax.bar(records_per_oneid.record_count, records_per_oneid.persons, width=0.8, color="teal")
ax.set(xlabel="records per person", ylabel="persons",
       title=f"Records per OneID (largest: {records_per_oneid.record_count.max()} records)")
nbkit.save(fig, "records_per_oneid")

# %% [markdown]
# ## Identifiers refused as links
#
# Before the identity graph is built, values that would join strangers are refused
# (`identity.suspicious_identifiers`): blocklisted placeholders such as the walk-in phone
# 13800138000, all-zero device ids, values shared by too many people or records. Each bar is the
# number of records that carried such values, per identifier type and reason; the label says
# how many distinct values. Those records still get a OneID through their other identifiers.

# %%
refused_identifiers = nbkit.query(spark, """
    SELECT id_type, reason, count(*) AS refused_values, sum(records) AS records
    FROM identity.suspicious_identifiers
    GROUP BY id_type, reason ORDER BY records DESC, id_type, reason""")
nbkit.show(refused_identifiers, "Identifiers refused as links")

# %%
fig, ax = plt.subplots(figsize=(8, 0.45 * len(refused_identifiers) + 1.5))
bars = ax.barh(refused_identifiers.id_type + " · " + refused_identifiers.reason, refused_identifiers.records,
               color="indianred")
ax.bar_label(bars, labels=[f"{n} value{'s' * (n != 1)}" for n in refused_identifiers.refused_values],
             padding=2, fontsize=8)
ax.invert_yaxis()
ax.set(xlabel="records carrying a refused value",
       title=f"Identifier values refused as links: {refused_identifiers.refused_values.sum()}")
nbkit.save(fig, "refused_identifiers")

# %% [markdown]
# ## Quarantine by source and reason
#
# Rows that cannot be trusted are not dropped but kept in `silver.quarantine` with the rule they
# broke: `malformed_record` (unparseable line), `missing_record_key`, `missing_<field>` and
# `invalid_<field>`. One bar per source, one colour per reason; `raw_payload` in the table holds
# the row as delivered, for fixing it at the source.

# %%
quarantine = nbkit.query(spark, """
    SELECT source, reason, count(*) AS rows FROM silver.quarantine
    GROUP BY source, reason ORDER BY source, reason""")
nbkit.show(quarantine, "Quarantine by source and reason")

# %%
fig, ax = plt.subplots(figsize=(8, 3.5))
if quarantine.empty:
    ax.text(0.5, 0.5, "nothing quarantined", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
else:
    by_reason = quarantine.pivot(index="source", columns="reason", values="rows").fillna(0)
    by_reason.plot.barh(stacked=True, ax=ax, colormap="tab10")
    ax.legend(title="reason", loc="center left", bbox_to_anchor=(1, 0.5))
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="rows quarantined", ylabel="")
ax.set_title(f"Quarantined rows: {quarantine.rows.sum():,}")
nbkit.save(fig, "quarantine")

# %% [markdown]
# ## Row accounting
#
# The latest silver run's ledger (`ops.row_accounting`): every landed row is in silver,
# quarantined, or a duplicate of a re-sent record — the silver stage fails otherwise. The
# quarantined and duplicate parts are small next to silver, so each bar is labelled with its
# three figures and whether they add up.

# %%
row_accounting = nbkit.query(spark, """
    SELECT source, landed, silver, quarantined, duplicates,
           landed = silver + quarantined + duplicates AS balanced
    FROM ops.row_accounting
    WHERE run_id = (SELECT max(run_id) FROM ops.row_accounting)
    ORDER BY source""")
nbkit.show(row_accounting, "Row accounting, latest silver run")

# %%
fig, ax = plt.subplots(figsize=(9, 0.5 * len(row_accounting) + 2), layout="constrained")
left = 0
for part, colour in (("silver", "seagreen"), ("quarantined", "indianred"), ("duplicates", "darkgrey")):
    ax.barh(row_accounting.source, row_accounting[part], left=left, color=colour, label=part)
    left = left + row_accounting[part]
for y, row in enumerate(row_accounting.itertuples()):
    ax.text(row.landed, y, f"  {row.landed:,} = {row.silver:,} + {row.quarantined:,} + {row.duplicates:,}"
            f" {'balanced' if row.balanced else 'NOT BALANCED'}", va="center", fontsize=8)
ax.invert_yaxis()
ax.set_xlim(0, row_accounting.landed.max() * 1.6)  # room for the labels
fig.legend(loc="outside lower center", ncol=3, frameon=False)
ax.set(xlabel="rows landed", title="Row accounting: landed = silver + quarantined + duplicates")
nbkit.save(fig, "row_accounting")

# %% [markdown]
# ## Data-quality rule failure rates over runs
#
# `ops.quality_metrics` records every rule of `conf/quality.yaml` on every silver run: rows
# checked, rows failed, the rate and the status against the rule's thresholds. Rows are rules
# (grouped by family), columns the most recent silver runs (oldest left); the darker the cell, the
# higher the failure rate, and a rule over its `warn_above` or `fail_above` says so in its cell.
# A cell darkening from left to right is a source getting worse. `cdp quality report` draws
# the same metrics as one chart per family.

# %%
RECENT_RUNS = 20
quality_trend = nbkit.query(spark, f"""
    SELECT run_id, computed_at, family, rule, source, checked, failed, rate, status
    FROM ops.quality_metrics
    WHERE run_id IN (SELECT run_id FROM ops.quality_metrics
                     GROUP BY run_id ORDER BY max(computed_at) DESC LIMIT {RECENT_RUNS})
    ORDER BY family, rule, computed_at""")
nbkit.show(quality_trend, "Data-quality failure rates over the recent silver runs")

# %%
runs = quality_trend.groupby("run_id").computed_at.max().sort_values()
rates = quality_trend.pivot(index=["family", "rule"], columns="run_id", values="rate")[runs.index]
statuses = quality_trend.pivot(index=["family", "rule"], columns="run_id", values="status")[runs.index]
fig, ax = plt.subplots(figsize=(1.1 * len(runs) + 4, 0.32 * len(rates) + 1.5))
image = ax.imshow(rates, cmap="Reds", aspect="auto", vmin=0, vmax=max(0.05, rates.max().max()))
for (y, x), rate in np.ndenumerate(rates.to_numpy()):
    if np.isnan(rate):  # the rule was not evaluated in that run
        continue
    flag = {"warn": " warn", "fail": " FAIL"}.get(statuses.iat[y, x], "")
    ax.text(x, y, f"{rate:.1%}{flag}", ha="center", va="center", fontsize=7,
            color="white" if rate > 0.6 * image.norm.vmax else "black")
ax.set_yticks(range(len(rates)), [f"{family} · {rule}" for family, rule in rates.index], fontsize=8)
ax.set_xticks(range(len(runs)), runs.dt.strftime("%m-%d %H:%M"), rotation=45, ha="right", fontsize=8)
ax.set_title("Failure rate per quality rule and silver run")
fig.colorbar(image, ax=ax, label="failed / checked", format="{x:.0%}")
nbkit.save(fig, "quality_trend")

# %% [markdown]
# The session is stopped only if this notebook started it, releasing the lakehouse's embedded
# metastore for `cdp` commands (a kernel's or the test suite's own session stays open).

# %%
opened.close()
