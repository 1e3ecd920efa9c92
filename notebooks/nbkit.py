"""What the notebooks share: their SparkSession, matplotlib's set-up, where figures go, how tables show.

The notebooks import it from this folder: Jupyter starts their kernel here, and
`python notebooks/<name>.py` puts this folder first on sys.path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from contextlib import ExitStack
from functools import lru_cache
from pathlib import Path

import matplotlib
from matplotlib import font_manager
from matplotlib.ft2font import FT2Font

# In a Jupyter kernel figures show inline; anywhere else they are only written as PNG files,
# which needs no display.
INTERACTIVE = "ipykernel" in sys.modules
if not INTERACTIVE:
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import pandas as pd  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from cdp.conf import load_settings  # noqa: E402
from cdp.spark import spark_session  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Fonts tried first for Chinese labels; any other installed font with the glyphs also serves.
PREFERRED_CJK_FONTS = ("Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "Microsoft YaHei",
                       "PingFang SC", "SimHei", "Droid Sans Fallback")


def session(opened: ExitStack) -> SparkSession:
    """The active SparkSession (a kernel's, the test suite's), else a new one on the configured lakehouse.

    A new one is stopped when `opened` closes; the catalog is shared with every other process of the
    lakehouse meanwhile (docs/operations.md, "Sharing the catalog")."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    return opened.enter_context(spark_session(load_settings(), app_name="cdp-notebook"))


def query(spark: SparkSession, sql: str) -> pd.DataFrame:
    """A Spark SQL query's result as a pandas DataFrame (the notebooks' results are small)."""
    return spark.sql(sql).toPandas()


def out_dir() -> Path:
    """CDP_NOTEBOOK_OUT, else build/notebooks under the project root."""
    return Path(os.environ.get("CDP_NOTEBOOK_OUT") or PROJECT_ROOT / "build" / "notebooks")


def save(fig: plt.Figure, name: str) -> Path:
    """Write the figure as <out_dir>/<name>.png and return that path (Jupyter shows it under the chart).

    Outside Jupyter the figure is also closed, as nothing will show it."""
    folder = out_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    if not INTERACTIVE:
        plt.close(fig)
    return path


def show(frame: pd.DataFrame, title: str) -> None:
    """A table: rendered by Jupyter, printed with its title when run as a script."""
    if INTERACTIVE:
        from IPython.display import display

        display(frame)
    else:
        print(f"\n== {title}\n{frame.to_string(index=False)}")


def font_for(text: str, fonts: Iterable[font_manager.FontEntry] | None = None) -> str | None:
    """The name of an installed font (default: matplotlib's list) with a glyph for every character of `text`.

    Fonts are read by file, never looked up by name: a family name is not a valid fontconfig pattern
    in general (matplotlib ships "Last Resort High-Efficiency"), and parsing one raises."""
    needed = {ord(c) for c in text}
    entries = list(font_manager.fontManager.ttflist if fonts is None else fonts)
    rank = {name: i for i, name in enumerate(PREFERRED_CJK_FONTS)}
    for entry in sorted(entries, key=lambda f: (rank.get(f.name, len(rank)), f.name, f.fname)):
        if needed <= _charmap(entry.fname):
            return entry.name
    return None


@lru_cache(maxsize=None)
def _charmap(fname: str) -> frozenset[int]:
    """The code points a font file has glyphs for; none for a file FreeType cannot read."""
    try:
        return frozenset(FT2Font(fname).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def use_font_for(text: str) -> bool:
    """Put a font that renders `text` first in matplotlib's font list; False, changing nothing, if none can.

    The caller then labels its charts without those characters, so no glyph goes missing."""
    name = font_for(text)
    if name is None:
        return False
    plt.rcParams["font.family"] = "sans-serif"
    plt.rcParams["font.sans-serif"] = [name, *plt.rcParams["font.sans-serif"]]
    return True
