"""spark-submit entry point for the gold stage: `spark-submit $(cdp submit-args) jobs/gold.py`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("gold"))
