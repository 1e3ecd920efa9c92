# %% [markdown]
# # OneID and data-quality overview
# Reads the catalog after `make demo`: how many persons, how records spread over them,
# what was quarantined and which identifiers were refused as links.

# %%
from cdp.config import load_settings
from cdp.spark import spark_session

QUERIES = {
    "records per OneID": """
        SELECT record_count, count(*) AS persons FROM gold.customer_profile
        GROUP BY record_count ORDER BY record_count LIMIT 15""",
    "channels present": """
        SELECT concat_ws('+', channels) AS channels, count(*) AS persons FROM gold.customer_profile
        GROUP BY channels ORDER BY persons DESC LIMIT 10""",
    "quarantine by reason": """
        SELECT source, reason, count(*) AS rows FROM silver.quarantine GROUP BY source, reason ORDER BY rows DESC""",
    "refused identifiers": """
        SELECT id_type, id_value, reason, records FROM identity.suspicious_identifiers ORDER BY records DESC LIMIT 10""",
    "row accounting (latest)": """
        SELECT source, landed, silver, quarantined, duplicates FROM ops.row_accounting
        WHERE run_id = (SELECT max(run_id) FROM ops.row_accounting) ORDER BY source""",
}

# %%
if __name__ == "__main__":
    with spark_session(load_settings(), app_name="cdp-notebook") as spark:
        for title, query in QUERIES.items():
            print(f"\n== {title}")
            spark.sql(query).show(truncate=False)
