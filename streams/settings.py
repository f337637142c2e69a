"""Configuration: one Settings value, read from the environment and overridden by flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from graph.identity import Pseudonyms, pseudonym_key_for
from graph.rules import CrossRegionRule

__all__ = ["DEV_SECRET", "ENV_VARS", "Settings", "SettingsError"]

# Used when LINKWATCH_SECRET is unset. Fine for a laptop demo; a deployment sets its own
# (actor ids are keyed hashes of account names, and anyone holding the key can test guesses).
DEV_SECRET = "linkwatch-development-secret-change-me"


class SettingsError(ValueError):
    """A configuration value that cannot be used, with the variable it came from."""


@dataclass(frozen=True, slots=True)
class Settings:
    bootstrap: str = "127.0.0.1:9092"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    data_dir: Path = Path(".linkwatch")
    partitions: int = 4
    # Copies of each topic linkwatch creates, and the copies a write with acks=all needs
    # (None leaves the broker's default). One broker (Tansu, tests) takes only 1; production
    # on Apache Kafka sets 3 and 2, so one broker can be lost without losing a write.
    replication_factor: int = 1
    min_insync_replicas: int | None = None
    min_regions: int = 3
    window_days: float = 365.0
    # Topic names are `{namespace}.reports` and so on; the consumer group is the namespace.
    namespace: str = "linkwatch"
    secret: str = DEV_SECRET
    # The key of the pseudonyms (graph/identity.py); unset, one is derived from `secret`.
    pseudonym_key: str = ""
    # acks=all and idempotence for the worker's producer (streams/transport.py): on with
    # Apache Kafka; the embedded broker (Tansu) cannot do it.
    idempotent_producer: bool = False
    # Requests a second per API key and worker (a burst of twice that is allowed).
    api_rate: float = 50.0
    max_accounts_per_signal: int = 20
    link_by_text: bool = False
    episode_hours: float = 12.0
    brigade_victims: int = 10
    # How other workers reach this one (for forwarded API requests); default from host/port.
    web_url: str = ""
    webhook_urls: str = ""
    webhook_secret: str = ""
    webhook_attempts: int = 6
    # Child processes that validate and pseudonymise for the intake agent (streams/offload.py):
    # by default one when the machine has a second core; 0 keeps intake in the worker.
    intake_processes: int = min(1, (os.cpu_count() or 1) - 1)
    # The resolver's state in a child process of its own (agents/resolve.py): by default
    # when the machine has a second core; off keeps it in the worker.
    resolver_process: bool = (os.cpu_count() or 1) > 1
    # A message this worker produced to a partition it owns is applied once Kafka has it,
    # not when the consumer fetches it back (agents/replay.py, `PartitionedState.offer`).
    local_handoff: bool = True

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise SettingsError("LINKWATCH_PARTITIONS must be at least 1")
        if self.replication_factor < 1:
            raise SettingsError("LINKWATCH_REPLICATION_FACTOR must be at least 1")
        if self.min_insync_replicas is not None:
            if self.min_insync_replicas < 1:
                raise SettingsError("LINKWATCH_MIN_INSYNC_REPLICAS must be at least 1")
            if self.min_insync_replicas > self.replication_factor:
                raise SettingsError(
                    "LINKWATCH_MIN_INSYNC_REPLICAS must not exceed LINKWATCH_REPLICATION_FACTOR "
                    "(no write could ever be acknowledged)"
                )
        if self.min_regions < 2:
            raise SettingsError("LINKWATCH_MIN_REGIONS must be at least 2")
        if self.window_days <= 0:
            raise SettingsError("LINKWATCH_WINDOW_DAYS must be positive")
        if not 0 < self.web_port < 65536:
            raise SettingsError("LINKWATCH_WEB_PORT must be a TCP port")
        if self.max_accounts_per_signal < 2:
            raise SettingsError("LINKWATCH_MAX_ACCOUNTS_PER_SIGNAL must be at least 2")
        if self.episode_hours < 0:
            raise SettingsError("LINKWATCH_EPISODE_HOURS must not be negative")
        if self.brigade_victims < 2:
            raise SettingsError("LINKWATCH_BRIGADE_VICTIMS must be at least 2")
        if self.webhook_urls and not self.webhook_secret:
            raise SettingsError(
                "LINKWATCH_WEBHOOK_URLS needs LINKWATCH_WEBHOOK_SECRET to sign with"
            )
        if self.pseudonym_key and len(self.pseudonym_key.encode("utf-8")) < 16:
            raise SettingsError("LINKWATCH_PSEUDONYM_KEY must be at least 16 bytes")
        if self.api_rate <= 0:
            raise SettingsError("LINKWATCH_API_RATE must be positive")
        if self.webhook_attempts < 1:
            raise SettingsError("LINKWATCH_WEBHOOK_ATTEMPTS must be at least 1")
        if not 0 <= self.intake_processes <= 64:
            raise SettingsError("LINKWATCH_INTAKE_PROCESSES must be between 0 and 64")

    @property
    def window_seconds(self) -> float:
        return self.window_days * 86400.0

    @property
    def secret_bytes(self) -> bytes:
        return self.secret.encode("utf-8")

    def pseudonyms(self) -> Pseudonyms:
        if self.pseudonym_key:
            return Pseudonyms(self.pseudonym_key.encode("utf-8"))
        return Pseudonyms(pseudonym_key_for(self.secret_bytes))

    @property
    def reports_topic(self) -> str:
        return f"{self.namespace}.reports"

    @property
    def rejected_topic(self) -> str:
        return f"{self.namespace}.reports.rejected"

    @property
    def identity_topic(self) -> str:
        """Internal, one partition: valid reports in one order for the alias resolver."""
        return f"{self.namespace}.identity"

    @property
    def actor_reports_topic(self) -> str:
        """Internal: valid reports keyed by actor id, so one actor's reports share a partition."""
        return f"{self.namespace}.actor-reports"

    @property
    def alerts_topic(self) -> str:
        return f"{self.namespace}.alerts"

    @property
    def hubs_topic(self) -> str:
        """Signal values found on too many accounts to link by (fingerprints, not values)."""
        return f"{self.namespace}.signal-hubs"

    @property
    def keys_topic(self) -> str:
        return f"{self.namespace}.api-keys"

    @property
    def alert_events_topic(self) -> str:
        return f"{self.namespace}.alert-events"

    @property
    def audit_topic(self) -> str:
        return f"{self.namespace}.audit"

    @property
    def workers_topic(self) -> str:
        return f"{self.namespace}.workers"

    @property
    def topics(self) -> tuple[str, ...]:
        return (
            self.reports_topic,
            self.rejected_topic,
            self.identity_topic,
            self.actor_reports_topic,
            self.alerts_topic,
            self.hubs_topic,
            self.keys_topic,
            self.alert_events_topic,
            self.audit_topic,
            self.workers_topic,
        )

    @property
    def single_partition_topics(self) -> frozenset[str]:
        """Topics read whole, in one order: the resolver's input and the shared state."""
        return frozenset(
            {
                self.identity_topic,
                self.keys_topic,
                self.alert_events_topic,
                self.audit_topic,
                self.workers_topic,
            }
        )

    @property
    def own_url(self) -> str:
        return self.web_url or f"http://{self.web_host}:{self.web_port}"

    @property
    def webhooks(self) -> tuple[str, ...]:
        return tuple(url.strip() for url in self.webhook_urls.split(",") if url.strip())

    def rule(self) -> CrossRegionRule:
        return CrossRegionRule(self.min_regions, self.episode_hours, self.brigade_victims)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (variable, kind) in ENV_VARS.items():
            text = environ.get(variable)
            if text is None or text == "":
                continue
            try:
                values[name] = _flag(text) if kind is bool else kind(text)
            except ValueError:
                raise SettingsError(f"{variable}={text!r} is not a valid {kind.__name__}") from None
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        """Flags win over the environment; a flag left unset (None) changes nothing."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


ENV_VARS: dict[str, tuple[str, type]] = {
    "bootstrap": ("LINKWATCH_BOOTSTRAP", str),
    "web_port": ("LINKWATCH_WEB_PORT", int),
    "web_host": ("LINKWATCH_WEB_HOST", str),
    "data_dir": ("LINKWATCH_DATA_DIR", Path),
    "partitions": ("LINKWATCH_PARTITIONS", int),
    "replication_factor": ("LINKWATCH_REPLICATION_FACTOR", int),
    "min_insync_replicas": ("LINKWATCH_MIN_INSYNC_REPLICAS", int),
    "min_regions": ("LINKWATCH_MIN_REGIONS", int),
    "window_days": ("LINKWATCH_WINDOW_DAYS", float),
    "namespace": ("LINKWATCH_NAMESPACE", str),
    "secret": ("LINKWATCH_SECRET", str),
    "pseudonym_key": ("LINKWATCH_PSEUDONYM_KEY", str),
    "idempotent_producer": ("LINKWATCH_IDEMPOTENT_PRODUCER", bool),
    "api_rate": ("LINKWATCH_API_RATE", float),
    "max_accounts_per_signal": ("LINKWATCH_MAX_ACCOUNTS_PER_SIGNAL", int),
    "link_by_text": ("LINKWATCH_LINK_BY_TEXT", bool),
    "episode_hours": ("LINKWATCH_EPISODE_HOURS", float),
    "brigade_victims": ("LINKWATCH_BRIGADE_VICTIMS", int),
    "web_url": ("LINKWATCH_WEB_URL", str),
    "webhook_urls": ("LINKWATCH_WEBHOOK_URLS", str),
    "webhook_secret": ("LINKWATCH_WEBHOOK_SECRET", str),
    "webhook_attempts": ("LINKWATCH_WEBHOOK_ATTEMPTS", int),
    "intake_processes": ("LINKWATCH_INTAKE_PROCESSES", int),
    "resolver_process": ("LINKWATCH_RESOLVER_PROCESS", bool),
    "local_handoff": ("LINKWATCH_LOCAL_HANDOFF", bool),
}


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)
