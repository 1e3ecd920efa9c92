"""spark-submit entry point for the silver stage: `spark-submit $(cdp submit-args) jobs/silver.py`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("silver"))
