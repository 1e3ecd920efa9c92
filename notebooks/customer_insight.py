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
# # Customer insight: RFM, lifecycle and channels
#
# Three views of the customer base as the gold layer holds it after a pipeline run (`make demo`):
#
# 1. **RFM heatmap** — how buyers spread over recency and frequency scores, and what they spend;
# 2. **lifecycle funnel** — persons per lifecycle stage, 潜客 → 新客 → 活跃 → 沉睡 → 流失;
# 3. **channel overlap** — which combinations of channels persons were seen in, thanks to OneID.
#
# Each chart's data is a pandas DataFrame (`rfm_heatmap`, `lifecycle_funnel`, `channel_overlap`),
# and each chart is written as a PNG to `$CDP_NOTEBOOK_OUT` (default `build/notebooks/`).

# %%
from contextlib import ExitStack

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import nbkit
from cdp.conf import load_settings

opened = ExitStack()
spark = nbkit.session(opened)
library = load_settings().tags  # conf/tags.yaml: the RFM scores' bins come from it

# %% [markdown]
# ## RFM heatmap (RFM客户分群)
#
# Every person who bought in the RFM window (`rfm_window_days`, 365 days) has an **R score**
# (`rfm_r`, 5 = bought most recently) and an **F score** (`rfm_f`, 5 = bought most often): quantile
# bins, so each score holds about a fifth of the buyers unless ties pile up on one value.
#
# How to read it: a cell counts the persons with that pair of scores (darker = more persons); its
# second line is their average lifetime spend (`total_spend` of `gold.customer_profile`, CNY).
# Top right (R 5, F 5) are the loyal, recent customers; bottom right are frequent buyers who have
# gone quiet — 保持 segments to win back; top left are recent one-off buyers to develop.
# Persons who never bought in the window have no scores and are not in the grid.

# %%
rfm_cells = nbkit.query(spark, """
    SELECT int(r.value) AS r_score, int(f.value) AS f_score, count(*) AS persons,
           avg(double(p.total_spend)) AS avg_spend
    FROM gold.customer_tags r
    JOIN gold.customer_tags f ON f.one_id = r.one_id AND f.tag_code = 'rfm_f'
    JOIN gold.customer_profile p ON p.one_id = r.one_id
    WHERE r.tag_code = 'rfm_r'
    GROUP BY 1, 2""")
grid = pd.MultiIndex.from_product(
    [range(1, library.tags["rfm_r"].score.bins + 1), range(1, library.tags["rfm_f"].score.bins + 1)],
    names=["r_score", "f_score"])
rfm_heatmap = (rfm_cells.set_index(["r_score", "f_score"]).reindex(grid)
               .fillna({"persons": 0}).astype({"persons": int}).reset_index())
nbkit.show(rfm_heatmap, "RFM heatmap: persons and average spend per R and F score")

# %%
persons = rfm_heatmap.pivot(index="r_score", columns="f_score", values="persons")
spend = rfm_heatmap.pivot(index="r_score", columns="f_score", values="avg_spend")
fig, ax = plt.subplots(figsize=(7, 5.5))
image = ax.imshow(persons, cmap="Blues", origin="lower")
for (row, col), count in np.ndenumerate(persons.to_numpy()):
    text = f"{count}" + ("" if count == 0 else f"\n¥{spend.iat[row, col]:,.0f}")
    ax.text(col, row, text, ha="center", va="center", fontsize=9,
            color="white" if count > persons.to_numpy().max() / 2 else "black")
ax.set_xticks(range(len(persons.columns)), persons.columns)
ax.set_yticks(range(len(persons.index)), persons.index)
ax.set(xlabel="F score (5 = most purchases)", ylabel="R score (5 = most recent purchase)",
       title=f"RFM: {rfm_heatmap.persons.sum():,} buyers by R and F score\n(second line: average lifetime spend)")
fig.colorbar(image, ax=ax, label="persons")
nbkit.save(fig, "rfm_heatmap")

# %% [markdown]
# ## Lifecycle funnel (生命周期阶段)
#
# Every person has exactly one `lifecycle_stage`, in the order `conf/tags.yaml` declares it:
# 潜客 never bought; 新客 first purchase within 30 days; 活跃 last purchase within 90 days;
# 沉睡 within 180 days; 流失 longer ago. The bars are the stages' sizes in that order, not
# conversions between them: a wide 沉睡 bar is a win-back opportunity, a wide 流失 bar a loss.
#
# The chart labels stages in Chinese and English when an installed font can draw Chinese
# (`fc-list :lang=zh` lists them), else in English only; the table keeps the tag values.

# %%
# The stages in the order of the lifecycle_stage tag's CASE in conf/tags.yaml, with English labels.
STAGES = {"潜客": "Prospect", "新客": "New", "活跃": "Active", "沉睡": "Dormant", "流失": "Churned"}

stage_counts = nbkit.query(spark, """
    SELECT value AS stage, count(*) AS persons FROM gold.customer_tags
    WHERE tag_code = 'lifecycle_stage' GROUP BY value""").set_index("stage")["persons"]
unknown = set(stage_counts.index) - set(STAGES)
if unknown:
    raise ValueError(f"lifecycle_stage values {sorted(unknown)} are not in STAGES: add them in the tag's order")
chinese = nbkit.use_font_for("".join(STAGES))
lifecycle_funnel = pd.DataFrame({
    "stage": list(STAGES),
    "label": [f"{zh} {en}" if chinese else en for zh, en in STAGES.items()],
    "persons": [int(stage_counts.get(stage, 0)) for stage in STAGES],
})
lifecycle_funnel["share"] = lifecycle_funnel.persons / lifecycle_funnel.persons.sum()
nbkit.show(lifecycle_funnel, "Lifecycle funnel")

# %%
widest = lifecycle_funnel.persons.max()
fig, ax = plt.subplots(figsize=(8, 4))
ax.barh(lifecycle_funnel.label, lifecycle_funnel.persons, left=(widest - lifecycle_funnel.persons) / 2,
        color=plt.get_cmap("viridis")(np.linspace(0.15, 0.9, len(lifecycle_funnel))))
for y, row in enumerate(lifecycle_funnel.itertuples()):
    inside = row.persons > widest / 4  # a narrow bar gets its figure beside it
    ax.text(widest / 2 if inside else (widest + row.persons) / 2 + widest / 100, y,
            f"{row.persons:,} ({row.share:.0%})", ha="center" if inside else "left", va="center",
            color="white" if inside else "black")
ax.invert_yaxis()  # the first stage on top
ax.set_xticks([])
ax.set_title(f"Lifecycle stage of {lifecycle_funnel.persons.sum():,} persons")
nbkit.save(fig, "lifecycle_funnel")

# %% [markdown]
# ## Channel overlap (全渠道)
#
# `channels` in `gold.customer_profile` lists every channel a person's records come from (CRM,
# store POS, e-commerce, WeChat mini-program, app, consent records). Without OneID each channel
# would count its own customers; with it, a person seen in three channels counts once.
#
# How to read it (an UpSet chart): each column is one combination of channels — the dots below
# say which — and the bar above is how many persons were seen in exactly those channels. The row
# labels give each channel's total. Tall bars with many dots are omnichannel customers.

# %%
combinations = nbkit.query(spark, """
    SELECT coalesce(channels, array()) AS channels, count(*) AS persons
    FROM gold.customer_profile GROUP BY 1""")
channel_names = sorted({name for combo in combinations.channels for name in combo})
membership = pd.DataFrame([{name: name in combo for name in channel_names} for combo in combinations.channels])
channel_overlap = pd.concat([
    pd.DataFrame({"channels": [" + ".join(combo) or "(none)" for combo in combinations.channels],
                  "channel_count": combinations.channels.map(len)}),
    membership, combinations[["persons"]],
], axis=1).sort_values(["persons", "channels"], ascending=[False, True], ignore_index=True)
nbkit.show(channel_overlap, "Channel overlap: persons per combination of channels")

# %%
SHOWN = 20  # the most common combinations; the table above has them all
top = channel_overlap.head(SHOWN)
fig, (bars, dots) = plt.subplots(2, 1, figsize=(max(6, 0.5 * len(top) + 2), 6), sharex=True,
                                 gridspec_kw={"height_ratios": [3, 1.6], "hspace": 0.05})
bars.bar(range(len(top)), top.persons, color="steelblue")
bars.bar_label(bars.containers[0], fontsize=8)
bars.set(ylabel="persons", title=f"Persons per combination of channels "
                                 f"({len(top)} most common of {len(channel_overlap)})")
totals = {name: channel_overlap.persons[channel_overlap[name]].sum() for name in channel_names}
for x, row in enumerate(top[channel_names].itertuples(index=False)):
    present = [y for y, member in enumerate(row) if member]
    dots.scatter([x] * len(channel_names), range(len(channel_names)), color="lightgrey", s=40)
    dots.scatter([x] * len(present), present, color="black", s=40, zorder=3)
    if present:
        dots.plot([x, x], [min(present), max(present)], color="black", zorder=2)
dots.set_yticks(range(len(channel_names)), [f"{name} ({totals[name]:,})" for name in channel_names])
dots.set_xticks([])
dots.set_ylim(-0.5, len(channel_names) - 0.5)
nbkit.save(fig, "channel_overlap")

# %% [markdown]
# The session is stopped only if this notebook started it, releasing the lakehouse's embedded
# metastore for `cdp` commands (a kernel's or the test suite's own session stays open).

# %%
opened.close()
