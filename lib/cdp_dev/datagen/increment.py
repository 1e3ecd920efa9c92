"""Split a generated landing folder into a first delivery and a later increment, by truth person.

The increment holds every record of a share of persons (new customers) and some records of another
share (existing customers who come back). Landing the first part, running, then adding the
increment and running again is how OneID stability is measured: persons the increment does not
touch must keep their one_id.
"""

from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

_EVENT_ID = re.compile(r'"event_id":\s*"([^"]*)"')


@dataclass(frozen=True)
class Increment:
    initial: Path  # landing folder for the first run
    increment: Path  # files to add to it before the second run
    new_persons: frozenset[str]
    returning_persons: frozenset[str]
    increment_records: int


def _truth(truth_dir: Path) -> dict[tuple[str, str], str]:
    with (truth_dir / "records.csv").open(encoding="utf-8", newline="") as handle:
        return {(r["source"], r["record_key"]): r["person_id"] for r in csv.DictReader(handle)}


def split_increment(data_dir: Path | str, new_share: float = 0.05, returning_share: float = 0.05, seed: int = 11) -> Increment:
    """Write DATA/initial/<source>/… and DATA/increment/<source>/…_part-9001.* from DATA/landing."""
    data_dir = Path(data_dir)
    truth = _truth(data_dir / "truth")
    persons = sorted(set(truth.values()))
    rng = random.Random(seed)
    new = set(rng.sample(persons, round(len(persons) * new_share)))
    rest = [p for p in persons if p not in new]
    returning = set(rng.sample(rest, round(len(rest) * returning_share)))
    initial_root, increment_root = data_dir / "initial", data_dir / "increment"
    moved = 0
    for source_dir in sorted(p for p in (data_dir / "landing").iterdir() if p.is_dir()):
        source = source_dir.name
        held: list[str] = []
        header = ""
        for path in sorted(source_dir.iterdir()):
            kept: list[str] = []
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            if path.suffix == ".csv":
                header, lines = lines[0], lines[1:]
            for line in lines:
                if path.suffix == ".csv":
                    key = next(csv.reader([line]))[0]
                else:
                    found = _EVENT_ID.search(line)
                    key = found.group(1) if found else ""
                person = truth.get((source, key))
                to_increment = person in new or (person in returning and rng.random() < 0.5)
                (held if to_increment else kept).append(line)
            target = initial_root / source / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text((header if path.suffix == ".csv" else "") + "".join(kept), encoding="utf-8")
            suffix = path.suffix
        if held:
            target = increment_root / source / f"{source}_part-9001{suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text((header if suffix == ".csv" else "") + "".join(held), encoding="utf-8")
            moved += len(held)
    (data_dir / "increment.json").write_text(json.dumps({
        "new_persons": sorted(new), "returning_persons": sorted(returning), "increment_records": moved,
    }) + "\n", encoding="utf-8")
    return Increment(initial_root, increment_root, frozenset(new), frozenset(returning), moved)
