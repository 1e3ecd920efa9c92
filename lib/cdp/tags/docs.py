"""docs/tags.md, rendered from conf/tags.yaml (`cdp tags doc`), so the documented library is the shipped one."""

from __future__ import annotations

from cdp.conf.tags import LAYER_RANK, TagLibrary

LAYER_TITLES = {
    "atomic": "Atomic tags (原子标签) — straight from data",
    "derived": "Derived tags (衍生标签) — from other tags",
    "scenario": "Scenario tags (场景标签) — for campaigns",
}


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render(library: TagLibrary) -> str:
    counts = {layer: sum(1 for t in library.tags.values() if t.layer == layer) for layer in LAYER_RANK}
    lines = [
        "# Tag library (标签库)",
        "",
        "<!-- Generated from conf/tags.yaml by `cdp tags doc > docs/tags.md`; edit the YAML, not this file. -->",
        "",
        f"{len(library.tags)} tags: {counts['atomic']} atomic, {counts['derived']} derived, "
        f"{counts['scenario']} scenario. The gold stage computes them into `gold.customer_tags` "
        "(one row per person and tag: boolean tags where true, other tags where they have a value), "
        "keeps entries and exits in `gold.tag_history` and mirrors this library, with coverage and "
        "usage, in `gold.tag_catalog`. How to write a tag: [configuration.md](configuration.md#tagsyaml).",
        "",
        "## Parameters",
        "",
        "`${name}` in a tag's logic is replaced by the parameter's value.",
        "",
        "| parameter | value |",
        "|---|---|",
        *[f"| `{name}` | `{_cell(value)}` |" for name, value in library.params.items()],
    ]
    for layer, title in LAYER_TITLES.items():
        codes = [c for c, tag in library.tags.items() if tag.layer == layer]  # the YAML's order
        if not codes:
            continue
        lines += ["", f"## {title}", "",
                  "| code | 中文名 | name | category | owner | type | version | status | history |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for code in codes:
            tag = library.tags[code]
            lines.append(
                f"| `{code}` | {tag.name_zh} | {_cell(tag.name_en)} | {_cell(tag.category)} | {tag.owner} | "
                f"{tag.type} | {tag.version} | {tag.status} | {'yes' if tag.tracked else 'no'} |"
            )
        lines.append("")
        for code in codes:
            tag = library.tags[code]
            reads = (f"reads {tag.source}" + (f", scored into {tag.score.bins} bins "
                     f"({'higher' if tag.score.higher_is_better else 'lower'} is better)" if tag.score else "")
                     if tag.layer == "atomic" else "reads " + ", ".join(f"`{d}`" for d in library.depends_on(code)))
            used = library.used_by(code)
            lines += [
                f"### `{code}` — {tag.name_zh}",
                "",
                f"{_cell(tag.description)} ({reads}"
                + (f"; default {tag.default}" if tag.default is not None else "")
                + (f"; used by {', '.join(f'`{u}`' for u in used)}" if used else "") + ")",
                "",
                "```sql",
                library.tags[code].value.strip(),
                "```",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"
