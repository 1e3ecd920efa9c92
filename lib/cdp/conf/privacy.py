"""conf/privacy.yaml: purposes and their consent defaults, the column classification, masks, roles, secrets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from cdp.conf.base import Strict, require_snake_case

Level = Literal["public", "internal", "sensitive", "highly_sensitive"]
LEVELS: tuple[str, ...] = ("public", "internal", "sensitive", "highly_sensitive")

# The masks a classified column may name: one SQL template each ({c}: the column or any SQL expression),
# so DataFrame code (cdp.privacy.protect) and the role views' SQL mask alike.
MASK_SQL = {
    # +8613800138000 (or 13800138000) → 138****8000: enough to recognise, not to dial
    "phone": "concat(substring({c}, -11, 3), '****', substring({c}, -4, 4))",
    # 110101199003070011 → 110***********0011: region kept, birth date and sequence hidden
    "id_card": "concat(substring({c}, 1, 3), '***********', substring({c}, -4, 4))",
    # zhang.wei@qq.com → z***@qq.com
    "email": "concat(substring({c}, 1, 1), '***@', substring_index({c}, '@', -1))",
    # 张伟 → 张*, 欧阳娜娜 → 欧***: the first character stays
    "name": "CASE WHEN char_length({c}) <= 1 THEN {c} ELSE concat(substring({c}, 1, 1), repeat('*', char_length({c}) - 1)) END",
    # a date kept to its year (1990-01-01)
    "year": "trunc({c}, 'year')",
    "hide": "CAST(NULL AS STRING)",
    # any other identifier: its first 4 characters (oDF3…, a member number's prefix)
    "prefix": "concat(substring({c}, 1, 4), '****')",
}
MASKS: tuple[str, ...] = tuple(MASK_SQL)


def mask_sql(mask: str, column: str) -> str:
    """The SQL expression masking `column` (a quoted name or any SQL expression)."""
    return MASK_SQL[mask].format(c=column)


class Purpose(Strict):
    """A purpose personal data may be used for (PIPL: 目的明确), its consent default and what an export carries."""

    default: Literal["opt_in", "opt_out"]  # opt_in: needs a grant; opt_out: allowed until withdrawn
    description: str
    contact: Literal["phone", "email", "phone_sha256", "none"] = "none"


class ColumnClass(Strict):
    level: Level
    mask: str | None = None

    @field_validator("mask")
    @classmethod
    def _known_mask(cls, value: str | None) -> str | None:
        if value is not None and value not in MASK_SQL:
            raise ValueError(f"unknown mask '{value}'; choose one of {', '.join(MASKS)}")
        return value


class Secrets(Strict):
    """Names of the environment variables holding the keys; the keys themselves never live in conf."""

    hash_key_env: str = "CDP_HASH_KEY"
    encryption_key_env: str = "CDP_ENCRYPTION_KEY"
    previous_encryption_key_env: str = "CDP_ENCRYPTION_KEY_PREVIOUS"


class Role(Strict):
    description: str
    tables: list[str] = Field(min_length=1)  # gold tables this role gets a view of
    clear: list[Level]  # levels shown as stored
    masked: list[Level] = Field(default_factory=list)  # levels shown through the column's mask
    consented_only: bool = False  # rows with a purpose are kept only while consent allows it


class PrivacyConfig(Strict):
    purposes: dict[str, Purpose] = Field(min_length=1)
    secrets: Secrets = Field(default_factory=Secrets)
    vacuum_retention_hours: int = Field(168, ge=0)
    layers: dict[Literal["bronze", "silver", "identity", "ops"], Level]
    classification: dict[str, dict[str, Level | ColumnClass]]
    roles: dict[str, Role] = Field(min_length=1)

    @property
    def defaults(self) -> dict[str, str]:
        """purpose → opt_in | opt_out."""
        return {name: p.default for name, p in self.purposes.items()}

    def column(self, table: str, column: str) -> ColumnClass | None:
        entry = self.classification.get(table, {}).get(column)
        return ColumnClass(level=entry) if isinstance(entry, str) else entry

    @model_validator(mode="after")
    def _consistent(self) -> PrivacyConfig:
        require_snake_case(self.purposes, "purpose", "a consent purpose")
        require_snake_case(self.roles, "role", "a SQL schema of views")
        for table in self.classification:
            if not table.startswith("gold."):
                raise ValueError(f"classification.{table}: list gold tables here; other layers take "
                                 f"their level from `layers`")
        for name, role in self.roles.items():
            for table in role.tables:
                if table not in self.classification:
                    raise ValueError(f"roles.{name}.tables: '{table}' is not classified; "
                                     f"add it under classification first")
                for column in self.classification[table]:
                    entry = self.column(table, column)
                    if entry.level in role.masked and entry.mask is None:
                        raise ValueError(f"classification.{table}.{column}: role '{name}' sees "
                                         f"{entry.level} columns masked, so this column needs a `mask` "
                                         f"(one of {', '.join(MASKS)})")
        return self
