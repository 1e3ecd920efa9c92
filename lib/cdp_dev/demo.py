"""`make demo`: every stage on generated data, then rows per layer, the evaluation and a query."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Callable

from rich.console import Console

from cdp.conf import Settings
from cdp.identity.evaluate import pairwise_scores, read_truth, write_scores
from cdp.pipeline import run_stages
from cdp.spark import spark_session
from cdp.tables import DATABASES, ONEID_MAP

# The cookbook's RFM query (docs/sql-cookbook.md): each RFM segment's size and average spend.
EXAMPLE_QUERY = """SELECT t.value                        AS rfm_segment,
       count(*)                       AS persons,
       round(avg(p.total_spend), 2)   AS avg_spend,
       round(avg(p.order_count), 2)   AS avg_orders
FROM gold.customer_tags t
JOIN gold.customer_profile p USING (one_id)
WHERE t.tag_code = 'rfm_segment'
GROUP BY t.value
ORDER BY avg_spend DESC"""


AUDIENCE_QUERY = """SELECT audience, purpose, matched AS matching_rule, members
FROM gold.audience_runs
WHERE run_id = (SELECT max(run_id) FROM gold.audience_runs)
ORDER BY audience"""


def layer_counts(spark) -> list[list]:
    """(database, table, rows) for every table in the five databases."""
    rows = []
    for database in DATABASES:
        for table in sorted(t.name for t in spark.catalog.listTables(database)):
            rows.append([database, table, spark.table(f"{database}.{table}").count()])
    return rows


def run_demo(settings: Settings, truth_dir: Path, as_of: date, console: Console,
             print_rows: Callable, print_scores: Callable) -> None:
    with spark_session(settings, app_name="cdp-demo") as spark:
        outcomes = run_stages(
            spark, settings, "all", as_of,
            on_done=lambda o: console.print(f"  {o.stage:<8} {o.status} in {o.seconds:5.1f}s"),
        )
        identity = next(o for o in outcomes if o.stage == "identity").metrics
        console.rule("Rows per layer")
        print_rows(["database", "table", "rows"], layer_counts(spark), "table")
        console.print(f"OneIDs: {identity['one_ids']:,} for {identity['records']:,} records", highlight=False)
        console.print(f"connected components engine: {identity['engine']}", highlight=False, soft_wrap=True)
        console.print(f"probabilistic links: {identity['probabilistic_links']:,} of {identity['candidate_pairs']:,} "
                      "candidate pairs", highlight=False)
        console.rule("OneID evaluation")
        scores = pairwise_scores(spark.table(ONEID_MAP), read_truth(spark, str(truth_dir)))
        print_scores(scores)
        target = write_scores(scores, Path(settings.reports_dir) / "evaluation.json")
        console.print(f"written to {target}", style="dim")
        console.rule("Example query")
        console.print(EXAMPLE_QUERY, highlight=False)
        result = spark.sql(EXAMPLE_QUERY)
        print_rows(result.columns, [list(r) for r in result.collect()], "table")
        console.rule("Audiences (consent-filtered)")
        sizes = spark.sql(AUDIENCE_QUERY)
        print_rows(sizes.columns, [list(r) for r in sizes.collect()], "table")
    console.print('Query it yourself: .venv/bin/cdp sql -e "SELECT * FROM gold.customer_profile LIMIT 5"')
