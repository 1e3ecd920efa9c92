"""spark-submit entry point for housekeeping (`cdp maintain`): OPTIMIZE every table, Z-order the
per-person ones by one_id, VACUUM. The daily DAG runs it after gold."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import maintain_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(maintain_main())
