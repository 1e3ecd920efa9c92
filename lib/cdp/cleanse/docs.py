"""docs/model.md, the field standard (字段标准库), rendered from conf/model.yaml and conf/sources.yaml
(`cdp model doc`), so the documented model is the shipped one: entities, fields, types, identifier
types, code maps, and which delivered column feeds each field."""

from __future__ import annotations

from cdp.conf import Settings
from cdp.conf.sources import FieldMapping, HashKey, Source


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _key(source: Source) -> str:
    if isinstance(source.record_key, HashKey):
        return f"hash of {', '.join(source.record_key.hash_of)}"
    return source.record_key if isinstance(source.record_key, str) else " + ".join(source.record_key)


def _origin(mapped: FieldMapping) -> str:
    return f"`{mapped.column}`" if mapped.column is not None else f"= '{mapped.value}'"


def _reading(mapped: FieldMapping, source: Source) -> str:
    """How a source reads its column, beyond the field's defaults."""
    notes = []
    if mapped.normaliser:
        notes.append(f"normaliser {mapped.normaliser}")
    if mapped.formats:
        notes.append("formats " + ", ".join(f"`{f}`" for f in mapped.formats))
    if mapped.timezone or (source.timezone and not mapped.epoch):
        notes.append(f"time zone {mapped.timezone or source.timezone}")
    if mapped.epoch:
        notes.append(f"epoch {mapped.epoch}")
    if mapped.values:
        notes.append("codes " + ", ".join(f"{k}→{v if v is not None else 'null'}" for k, v in mapped.values.items()))
    if mapped.unmapped:
        notes.append(f"unmapped: {mapped.unmapped}")
    if mapped.when:
        notes.append(f"when `{mapped.when}`")
    return f" ({'; '.join(notes)})" if notes else ""


def render(settings: Settings) -> str:
    model, sources = settings.model, settings.sources.sources
    policy = settings.identity.identifiers
    lines = [
        "# The data model (字段标准库)",
        "",
        "<!-- Generated from conf/model.yaml and conf/sources.yaml by `cdp model doc -o docs/model.md`; "
        "edit the YAML, not this file. -->",
        "",
        f"{len(model.entities)} entities, {len(model.identifier_types)} identifier types, {len(model.value_maps)} "
        f"code maps, fed by {len(sources)} sources. How to change them: "
        "[configuration.md](configuration.md#modelyaml); onboarding an export: the README.",
        "",
        "## Identifier types",
        "",
        "Every value is normalised by its type's normaliser before it becomes a graph vertex; how strongly a "
        "type links (priority, limits) is `conf/identity.yaml`'s.",
        "",
        "| type | normaliser | mask in gold.identity_map | gold value | priority | max per person | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, spec in model.identifier_types.items():
        rule = policy.get(name)
        lines.append(f"| `{name}` | {spec.normaliser} | {spec.mask} | {rule.gold if rule else ''} | "
                     f"{rule.priority if rule else ''} | {rule.max_per_person if rule else ''} | {_cell(spec.description)} |")
    lines += ["", "## Code maps (码值映射)", "",
              "A delivered code is trimmed and compared case-insensitively; a canonical value is accepted as it is.",
              ""]
    for name, value_map in model.value_maps.items():
        canonical = value_map.canonical
        shown = ", ".join(canonical) if isinstance(canonical, list) else {
            "purposes": "the purposes of privacy.yaml", "identifier_types": "the identifier types above",
            None: "open (any value)"}[canonical]
        lines.append(f"**{name}** — canonical: {shown}; unknown codes: {value_map.policy}")
        lines.append("")
        if value_map.values:
            lines += ["| code | canonical |", "|---|---|"]
            lines += [f"| {_cell(code)} | {value if value is not None else '*(null: no information)*'} |"
                      for code, value in value_map.values.items()]
            lines.append("")
    lines += ["## Entities", ""]
    for name, entity in model.entities.items():
        feeding = {s: src for s, src in sources.items() if src.entity == name}
        lines += [f"### {name}", "", _cell(entity.description) + ".", ""]
        facts = [f"silver table `silver.{name}`"]
        if entity.time_field:
            facts.append(f"time field `{entity.time_field}`")
        if entity.interaction:
            facts.append("its records are activity")
        if entity.subject:
            facts.append(f"the identifier that acts is `{entity.subject.type}`:`{entity.subject.value}`")
        facts.append("sources: " + (", ".join(f"`{s}` (key {_key(src)})" for s, src in feeding.items()) or "none yet"))
        lines += ["; ".join(facts) + ".", "",
                  "| field | type | normaliser | identifier | codes | required | fed by |", "|---|---|---|---|---|---|---|"]
        for field, spec in entity.fields.items():
            fed = "; ".join(f"{s}.{_origin(src.mapping[field])}{_reading(src.mapping[field], src)}"
                            for s, src in feeding.items() if field in src.mapping)
            lines.append(f"| `{field}` | {spec.type} | {model.normaliser_of(name, field)} | {spec.identifier or ''} | "
                         f"{spec.values or ''} | {'yes' if spec.required else ''} | {fed} |")
        extra = [(s, x) for s, src in feeding.items() for x in src.identifiers]
        if extra:
            lines += ["", "Identifiers read from columns besides the fields:", "",
                      "| source | type | column | when |", "|---|---|---|---|"]
            lines += [f"| {s} | {x.type} | `{x.column}` | {f'`{_cell(x.when)}`' if x.when else ''} |" for s, x in extra]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
