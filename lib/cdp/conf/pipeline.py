"""conf/pipeline.yaml: environment profiles (where the lakehouse lives, how Spark starts) and the jars."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cdp.conf.base import ConfigError, Strict, expand_env


def _strings(value: Any) -> Any:
    """A mapping's values as the strings Spark and Kafka want: YAML reads 8 as an int and true as a bool."""
    if isinstance(value, dict):
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
    return value


class Profile(Strict):
    master: str | None = None
    lakehouse: str
    landing: str
    # shared: a Derby network server over <lakehouse>/metastore_db, started on demand, so that many
    # processes use the catalog at once; embedded: Derby inside the one process (one JVM at a time);
    # external: the cluster's own metastore (its hive-site.xml).
    metastore: Literal["shared", "embedded", "external"] = "shared"
    checkpoint_dir: str | None = None
    timezone: str = "Asia/Shanghai"
    # A laptop or test profile may fall back to fixed development keys when CDP_HASH_KEY /
    # CDP_ENCRYPTION_KEY are unset; a cluster profile must not (privacy.yaml `secrets`).
    dev_secrets: bool = False
    spark_conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("spark_conf", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        return _strings(value)


class Jars(Strict):
    packages: list[str]
    staged_dir: str | None = None
    graphframes_package: str
    # Spark's Kafka source: added to the packages of a stream that follows Kafka (stream.kafka)
    kafka_package: str = "org.apache.spark:spark-sql-kafka-0-10_2.13:4.1.1"
    # Maven repositories searched besides Maven Central (a corporate mirror, a file:// repository);
    # a list, or one comma-separated string (what CDP_MAVEN_REPOSITORIES holds).
    repositories: list[str] = Field(default_factory=list)

    @field_validator("packages")
    @classmethod
    def _maven_coordinates(cls, value: list[str]) -> list[str]:
        for coordinate in value:
            if coordinate.count(":") != 2:
                raise ValueError(f"'{coordinate}' is not a Maven coordinate group:artifact:version")
        return value

    @field_validator("repositories", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [part.strip() for item in value for part in str(item).split(",") if part.strip()]
        return value

    @field_validator("repositories")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if "://" not in url and "${" not in url:
                raise ValueError(f"'{url}' is not a repository URL (https://…, file:///…)")
        return value


class Kafka(Strict):
    """`cdp stream` over Kafka instead of the landing folders: the brokers, and the topic of each
    followed source, each message one record as a JSON object of the source's columns."""
    bootstrap_servers: str = ""  # empty: the stream follows the landing folders
    topics: dict[str, str] = Field(default_factory=dict)  # source: topic; the sources the stream follows
    starting_offsets: Literal["earliest", "latest"] = "earliest"  # where a new stream starts
    max_offsets_per_trigger: int | None = Field(None, ge=1)  # at most this many records a batch
    # passed to the Kafka consumer as kafka.<key>: security.protocol, sasl.mechanism, sasl.jaas.config …
    options: dict[str, str] = Field(default_factory=dict)

    @field_validator("options", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        return _strings(value)

    @field_validator("options")
    @classmethod
    def _consumer_settings(cls, value: dict[str, str]) -> dict[str, str]:
        owned = sorted(k for k in value if k in ("bootstrap.servers", "group.id", "key.deserializer",
                                                 "value.deserializer", "enable.auto.commit", "auto.offset.reset"))
        if owned:
            raise ValueError(f"{owned} are the stream's own (bootstrap_servers, starting_offsets; its offsets "
                             "live in its checkpoint): remove them from stream.kafka.options")
        return value

    @property
    def enabled(self) -> bool:
        """Whether brokers are named. In a conf kept unexpanded (a release, `make package`), a
        ${VAR} reference is read from the environment it is built in; one without a default counts
        as named (every deployment must set it)."""
        value = self.bootstrap_servers
        if "${" in value:
            try:
                value = expand_env(value, file=Path("pipeline.yaml"), key="stream.kafka.bootstrap_servers")
            except ConfigError:
                return True
        return bool(value.strip())


class Stream(Strict):
    """`cdp stream`: how often it looks for new event files, how many it takes per batch, and how many
    days of events it keeps for the realtime tags (their longest window)."""
    trigger_seconds: float = Field(2.0, gt=0, le=3600)
    max_files_per_trigger: int = Field(1000, ge=1)
    keep_days: int = Field(30, ge=1, le=3660)
    # a micro-batch holds seconds of events: a few shuffle partitions, not the batch jobs' hundreds
    shuffle_partitions: int = Field(2, ge=1, le=10000)
    # Spark's code generation for the batches: off, a micro-batch's few thousand rows are interpreted
    # in less time than Janino compiles their plans again (time literals change the code every batch)
    codegen: bool = False
    # gold.realtime_tags, ops.stream_progress and the pusher's audit rows and cursor are written when
    # publish_seconds have passed and the stream is idle (its last trigger found nothing new); while
    # batches run back to back, once publish_max_seconds have passed; and when the stream stops. The
    # batches commit only the activation and kept events: a publish's commits slow the batches beside it.
    publish_seconds: float = Field(30.0, ge=0, le=3600)
    publish_max_seconds: float = Field(120.0, ge=0, le=86400)
    kafka: Kafka = Field(default_factory=Kafka)

    @model_validator(mode="after")
    def _publish_bounds(self) -> Stream:
        if self.publish_max_seconds < self.publish_seconds:
            raise ValueError(f"publish_max_seconds ({self.publish_max_seconds:g}) is below publish_seconds "
                             f"({self.publish_seconds:g}): set it to publish_seconds or more")
        return self


class PipelineConfig(Strict):
    default_profile: str
    profiles: dict[str, Profile]
    jars: Jars
    stream: Stream = Field(default_factory=Stream)

    @model_validator(mode="after")
    def _default_exists(self) -> PipelineConfig:
        if self.default_profile not in self.profiles:
            raise ValueError(
                f"default_profile '{self.default_profile}' is not one of {sorted(self.profiles)}"
            )
        return self
