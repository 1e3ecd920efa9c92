"""The product driven as a user drives it: `cdp` in new processes, over a lakehouse of their own.

The CLI lakehouse (80 generated persons, every stage run once by `cdp run`) is shared by the
modules that need a local run: tests/test_end_to_end.py drives the CLI over it, and
tests/test_cluster.py compares a standalone cluster's run on the same landing files with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUN_DATE = "2026-11-01"


def cli_environment(work: Path) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(
        CDP_PROFILE="test",
        CDP_LAKEHOUSE=str(work / "lakehouse"),
        CDP_LANDING=str(work / "data" / "landing"),
        PATH=f"{BIN}{os.pathsep}{environment.get('PATH', '')}",
        E2E_WORK=str(work),
    )
    return environment


def cdp(env, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "cdp"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"cdp {' '.join(args)} failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    return result


def generate_and_run(env: dict[str, str]) -> subprocess.CompletedProcess:
    """80 persons (seed 3) into the landing folder, then every stage: what `cdp run --stage all` prints."""
    work = Path(env["E2E_WORK"])
    cdp(env, "generate", "--persons", "80", "--seed", "3", "--out", str(work / "data"))
    return cdp(env, "run", "--stage", "all", "--as-of", RUN_DATE)
