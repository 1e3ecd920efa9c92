"""The structure holds: imports run one way (docs/architecture.md, "Layers"), table names have one
home (cdp.tables) that the docs and the privacy classification follow, and conf needs no Spark."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml

from cdp import tables

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [ROOT / "lib", ROOT / "jobs", ROOT / "notebooks"]
TABLE_NAME = re.compile(r"(bronze|silver|identity|gold|ops)\.(?!(yaml|md|py)$)[a-z_]+")


def declared_layers(text: str) -> list[list[str]]:
    """The module prefixes of each numbered item between <!-- layers … --> and <!-- /layers -->."""
    block = text.split("<!-- layers", 1)[1].split("<!-- /layers -->", 1)[0]
    items = re.findall(r"^\d+\. (.+?) —", block, flags=re.M)
    return [re.findall(r"`([A-Za-z_][\w.]*)`", item) for item in items]


LAYERS = declared_layers((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))


def layer_of(module: str) -> int | None:
    """The index of the layer whose prefix matches `module` most closely (the root package: 0)."""
    if module == "cdp":
        return 0  # cdp/__init__.py holds the version only
    matches = [(len(prefix), index) for index, prefixes in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def module_name(path: Path) -> str:
    for top in ("jobs", "notebooks"):
        if (ROOT / top) in path.parents:
            return top
    return ".".join(path.relative_to(ROOT / "lib").with_suffix("").parts).removesuffix(".__init__")


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of cdp or cdp_dev in the file, at any depth (functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] in ("cdp", "cdp_dev")]


def violations(path: Path, named_as: Path | None = None) -> list[str]:
    """Every import of the file that points down the layers (the file judged as if it were `named_as`)."""
    where = (named_as or path).relative_to(ROOT)
    importer = module_name(named_as or path)
    own = layer_of(importer)
    if own is None:
        return [f"{where}: module {importer} is in no layer of docs/architecture.md"]
    problems = []
    for line, imported in project_imports(path):
        target = layer_of(imported)
        if target is None:
            problems.append(f"{where}:{line} imports {imported}, which is in no layer")
        elif target > own:
            problems.append(f"{where}:{line} imports {imported} (layer {target + 1}: {', '.join(LAYERS[target])}) "
                            f"from layer {own + 1} ({', '.join(LAYERS[own])})")
    return problems


def python_files() -> list[Path]:
    return sorted(p for folder in SCANNED for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_layers_are_declared():
    assert LAYERS[0] == ["cdp.conf", "cdp.logs"] and LAYERS[-1] == ["cdp.cli", "cdp_dev", "jobs", "notebooks"]
    assert len(LAYERS) == 14


def test_every_import_points_up_the_layers_or_stays_in_its_own():
    assert [problem for path in python_files() for problem in violations(path)] == []


def test_an_import_from_a_layer_below_is_named(tmp_path):
    """The check itself can fail: the table registry importing the pipeline is refused, by name."""
    registry = ROOT / "lib" / "cdp" / "tables.py"
    wrong = tmp_path / "tables.py"
    wrong.write_text(registry.read_text(encoding="utf-8") + "\nfrom cdp.pipeline import STAGES\n", encoding="utf-8")
    found = violations(wrong, named_as=registry)
    assert len(found) == 1
    assert re.fullmatch(r"lib/cdp/tables\.py:\d+ imports cdp\.pipeline \(layer 13: cdp\.pipeline, cdp\.package\) "
                        r"from layer 2 \(cdp\.tables\)", found[0]), found


def test_loading_the_configuration_imports_no_spark():
    code = ("import sys; from cdp.conf import load_settings; load_settings('test', sys.argv[1]).validate_all(); "
            "print(sorted(m for m in ('pyspark', 'py4j', 'pandas', 'pyarrow', 'delta') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, str(ROOT / "conf")], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_table_names_are_written_only_in_the_registry():
    """Modules take table names from cdp.tables: no other module spells one out as a string."""
    spelled = []
    for path in python_files():
        if ROOT / "notebooks" in path.parents:
            continue  # the analysts' notebooks are SQL examples, written as analysts write them
        if path == ROOT / "lib" / "cdp" / "tables.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and TABLE_NAME.fullmatch(node.value):
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value}")
    assert spelled == []


def test_docs_describe_exactly_the_registered_tables():
    text = (ROOT / "docs" / "tables.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^`((?:bronze|silver|identity|gold|ops)\.[a-z_]+)` —", text, flags=re.M))
    from cdp.conf import load_model
    from cdp.conf.model import DataModel

    entities = load_model(ROOT / "conf" / "model.yaml", DataModel).entities
    entity_tables = {tables.silver_table(e) for e in entities}
    assert entity_tables <= documented, "docs/tables.md lacks a silver table of conf/model.yaml"
    assert documented - entity_tables - shipped_daily_tables() == {t.name for t in tables.TABLES}


def shipped_daily_tables() -> set[str]:
    """gold's per-person daily summaries: one per entity a shipped tag counts over."""
    library = yaml.safe_load((ROOT / "conf" / "tags.yaml").read_text(encoding="utf-8"))
    return {tables.daily_table(t["source"]) for t in library["tags"].values() if t.get("source") not in (None, "profile")}


def test_the_privacy_classification_covers_exactly_the_gold_tables():
    privacy = yaml.safe_load((ROOT / "conf" / "privacy.yaml").read_text(encoding="utf-8"))
    assert shipped_daily_tables() == {"gold.orders_daily", "gold.events_daily"}
    assert set(privacy["classification"]) == set(tables.in_layer("gold")) | shipped_daily_tables()
    assert set(privacy["layers"]) == set(tables.DATABASES) - {"gold"}
