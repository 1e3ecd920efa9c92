"""spark-submit entry point for real-time profiles (`cdp stream`): follows the event sources' landing
folders and keeps gold.realtime_tags current, until SIGTERM; `--once` processes what has landed and stops."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import stream_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(stream_main())
