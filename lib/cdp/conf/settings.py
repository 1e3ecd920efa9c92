"""Settings: the chosen profile with its paths resolved, and every conf file, each loaded and validated once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cdp.conf.audiences import AudiencesConfig, RuleError, compile_rule
from cdp.conf.base import ConfigError, expand_tree, load_model
from cdp.conf.gold import PROFILE_COLUMNS, GoldConfig
from cdp.conf.identity import IdentityConfig
from cdp.conf.model import DataModel
from cdp.conf.pipeline import Jars, PipelineConfig, Profile, Stream
from cdp.conf.privacy import PrivacyConfig
from cdp.conf.quality import QualityConfig
from cdp.conf.sources import SourcesConfig
from cdp.conf.tags import TagLibrary


def default_conf_dir() -> Path:
    """CDP_CONF_DIR, else ./conf, else the conf/ folder of the source checkout."""
    if os.environ.get("CDP_CONF_DIR"):
        return Path(os.environ["CDP_CONF_DIR"]).resolve()
    cwd_conf = Path.cwd() / "conf"
    if (cwd_conf / "pipeline.yaml").is_file():
        return cwd_conf.resolve()
    return (Path(__file__).resolve().parents[3] / "conf").resolve()


@dataclass(frozen=True)
class Settings:
    """Everything a run needs: the chosen profile with resolved paths, and every conf file."""

    conf_dir: Path
    profile_name: str
    pipeline: PipelineConfig

    @property
    def profile(self) -> Profile:
        return self.pipeline.profiles[self.profile_name]

    @property
    def root(self) -> Path:
        return self.conf_dir.parent

    def resolve(self, location: str) -> str:
        """Absolute local path for a relative location; URIs (s3a://, hdfs://) pass through."""
        if "://" in location or location.startswith("/"):
            return location
        return str((self.root / location).resolve())

    @property
    def lakehouse(self) -> str:
        return self.resolve(self.profile.lakehouse)

    @property
    def landing(self) -> str:
        return self.resolve(self.profile.landing)

    @property
    def checkpoint_dir(self) -> str:
        if self.profile.checkpoint_dir:
            return self.resolve(self.profile.checkpoint_dir)
        return f"{self.lakehouse}/_checkpoints"

    @property
    def warehouse(self) -> str:
        return f"{self.lakehouse}/warehouse"

    @property
    def reports_dir(self) -> str:
        return f"{self.lakehouse}/reports"

    @cached_property
    def model(self) -> DataModel:
        return load_model(self.conf_dir / "model.yaml", DataModel)

    @cached_property
    def sources(self) -> SourcesConfig:
        return load_model(self.conf_dir / "sources.yaml", SourcesConfig,
                          context={"model": self.model, "purposes": list(self.privacy.purposes)})

    @cached_property
    def identity(self) -> IdentityConfig:
        return load_model(self.conf_dir / "identity.yaml", IdentityConfig, context={"model": self.model})

    @cached_property
    def gold(self) -> GoldConfig:
        return load_model(self.conf_dir / "gold.yaml", GoldConfig, context={"model": self.model})

    @cached_property
    def privacy(self) -> PrivacyConfig:
        return load_model(self.conf_dir / "privacy.yaml", PrivacyConfig)

    @cached_property
    def tags(self) -> TagLibrary:
        # ${name} in tags.yaml are the library's own params, not environment variables
        return load_model(self.conf_dir / "tags.yaml", TagLibrary, expand=False, context={"model": self.model})

    @cached_property
    def audiences(self) -> AudiencesConfig:
        config = load_model(self.conf_dir / "audiences.yaml", AudiencesConfig)
        check_audiences(config, self.gold, self.privacy, self.tags, self.conf_dir / "audiences.yaml")
        return config

    @cached_property
    def quality(self) -> QualityConfig:
        return load_model(self.conf_dir / "quality.yaml", QualityConfig)

    def validate_all(self) -> None:
        """Load every conf file now, so a bad one fails before any Spark work starts."""
        _ = self.model, self.sources, self.identity, self.gold, self.privacy, self.tags, self.audiences
        check_quality_rules(self.quality, self.sources, self.model, self.conf_dir / "quality.yaml")


def check_audiences(config: AudiencesConfig, gold: GoldConfig, privacy: PrivacyConfig, tags: TagLibrary,
                    file: Path) -> None:
    """Each audience's purpose is declared and its rule is well formed over known tags."""
    for name, audience in config.audiences.items():
        if audience.purpose not in privacy.purposes:
            raise ConfigError(f"{file}: key 'audiences.{name}.purpose': '{audience.purpose}' is not a declared "
                              f"purpose. Fix: one of {sorted(privacy.purposes)} (privacy.yaml purposes).")
        try:
            compile_rule(audience.rule, tags, set(PROFILE_COLUMNS) | set(gold.survivorship))
        except RuleError as exc:
            raise ConfigError(f"{file}: key 'audiences.{name}.rule': {exc}") from exc


def check_quality_rules(quality: QualityConfig, sources: SourcesConfig, model: DataModel, file: Path) -> None:
    """Every rule names a configured source and, where it has one, a field that source maps."""
    for index, rule in enumerate(quality.rules):
        where = f"{file}: key 'rules[{index}]' ({rule.name})"
        source = sources.sources.get(rule.source)
        if source is None:
            raise ConfigError(f"{where}: source '{rule.source}' is not in sources.yaml. Fix: one of {sorted(sources.sources)}.")
        if rule.field and rule.field not in source.mapping:
            raise ConfigError(
                f"{where}: field '{rule.field}' is not mapped by source '{rule.source}'. "
                f"Fix: one of {sorted(source.mapping)}."
            )
        if rule.family == "consistency" and "id_card" not in model.entities[source.entity].identifiers.values():
            raise ConfigError(f"{where}: consistency rules check an id_card field, which entity '{source.entity}' "
                              "does not have. Fix: name a source whose entity has one (customers).")


def load_settings(profile: str | None = None, conf_dir: Path | str | None = None, *, expand: bool = True) -> Settings:
    """Load conf/pipeline.yaml and pick a profile (argument, CDP_PROFILE, or default_profile).

    expand=False keeps the profile's ${VAR} references as written: a release package is built once
    and each deployment fills them from its own environment at run time.
    """
    directory = Path(conf_dir).resolve() if conf_dir else default_conf_dir()
    pipeline_file = directory / "pipeline.yaml"
    # Profiles are expanded lazily: a cluster profile's required variables must not
    # break a laptop run that never uses that profile.
    pipeline = load_model(pipeline_file, PipelineConfig, expand=False)
    name = profile or os.environ.get("CDP_PROFILE") or pipeline.default_profile
    if name not in pipeline.profiles:
        raise ConfigError(
            f"{pipeline_file}: profile '{name}' is not defined under 'profiles'. "
            f"Fix: use one of {sorted(pipeline.profiles)}."
        )
    if not expand:
        return Settings(conf_dir=directory, profile_name=name, pipeline=pipeline)
    chosen = Profile.model_validate(
        expand_tree(pipeline.profiles[name].model_dump(), file=pipeline_file, key=f"profiles.{name}")
    )
    jars = Jars.model_validate(expand_tree(pipeline.jars.model_dump(), file=pipeline_file, key="jars"))
    stream = Stream.model_validate(expand_tree(pipeline.stream.model_dump(), file=pipeline_file, key="stream"))
    resolved = pipeline.model_copy(update={"profiles": {**pipeline.profiles, name: chosen}, "jars": jars,
                                           "stream": stream})
    return Settings(conf_dir=directory, profile_name=name, pipeline=resolved)
