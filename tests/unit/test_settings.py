"""Settings: topic replication read from the environment, checked, and carried to the topics."""

from __future__ import annotations

import pytest

from streams.kafka import MAX_MESSAGE_BYTES, topic_configs
from streams.settings import Settings, SettingsError


def test_one_broker_defaults_replicate_once_and_leave_min_isr_to_the_broker() -> None:
    settings = Settings.from_env({})
    assert settings.replication_factor == 1
    assert settings.min_insync_replicas is None
    assert all("min.insync.replicas" not in c for c in topic_configs(settings).values())


def test_production_replication_is_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {"LINKWATCH_REPLICATION_FACTOR": "3", "LINKWATCH_MIN_INSYNC_REPLICAS": "2"}
    )
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)


def test_an_empty_min_isr_variable_means_unset() -> None:
    settings = Settings.from_env(
        {"LINKWATCH_REPLICATION_FACTOR": "3", "LINKWATCH_MIN_INSYNC_REPLICAS": ""}
    )
    assert settings.min_insync_replicas is None


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"LINKWATCH_REPLICATION_FACTOR": "0"}, "LINKWATCH_REPLICATION_FACTOR"),
        ({"LINKWATCH_REPLICATION_FACTOR": "-1"}, "LINKWATCH_REPLICATION_FACTOR"),
        (
            {"LINKWATCH_REPLICATION_FACTOR": "3", "LINKWATCH_MIN_INSYNC_REPLICAS": "0"},
            "LINKWATCH_MIN_INSYNC_REPLICAS",
        ),
        # Two copies required of a topic that has one: no acks=all write could ever succeed.
        ({"LINKWATCH_MIN_INSYNC_REPLICAS": "2"}, "LINKWATCH_MIN_INSYNC_REPLICAS"),
        (
            {"LINKWATCH_REPLICATION_FACTOR": "3", "LINKWATCH_MIN_INSYNC_REPLICAS": "4"},
            "LINKWATCH_MIN_INSYNC_REPLICAS",
        ),
        ({"LINKWATCH_REPLICATION_FACTOR": "three"}, "LINKWATCH_REPLICATION_FACTOR"),
        ({"LINKWATCH_MIN_INSYNC_REPLICAS": "1.5"}, "LINKWATCH_MIN_INSYNC_REPLICAS"),
    ],
)
def test_unusable_replication_is_refused_naming_the_variable(
    environ: dict[str, str], names: str
) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(environ)


def test_min_isr_equal_to_the_replication_factor_is_allowed() -> None:
    settings = Settings(replication_factor=3, min_insync_replicas=3)
    assert settings.min_insync_replicas == 3


def test_flags_cannot_bypass_the_check() -> None:
    with pytest.raises(SettingsError, match="LINKWATCH_MIN_INSYNC_REPLICAS"):
        Settings(replication_factor=3).with_overrides(min_insync_replicas=5)


def test_min_isr_reaches_every_topic_and_retention_is_kept() -> None:
    settings = Settings(replication_factor=3, min_insync_replicas=2)
    configs = topic_configs(settings)
    assert set(configs) == set(settings.topics)
    assert {c["min.insync.replicas"] for c in configs.values()} == {"2"}
    assert configs[settings.alerts_topic]["retention.ms"] == "-1"


def test_the_topics_that_get_whole_actors_alerts_and_rejected_copies_take_large_records() -> None:
    settings = Settings()
    configs = topic_configs(settings)
    large = {settings.actor_reports_topic, settings.alerts_topic, settings.rejected_topic}
    for topic, config in configs.items():
        expected = str(MAX_MESSAGE_BYTES) if topic in large else None
        assert config.get("max.message.bytes") == expected, topic
    # The reports topic keeps the broker's limit, so a rejected copy and its headers fit.
    assert MAX_MESSAGE_BYTES >= 2 * 1024 * 1024


def test_the_rate_limit_refills_at_its_rate_and_caps_at_its_burst() -> None:
    from streams.keys import RateLimit

    limit = RateLimit(rate=2.0)
    assert [limit.wait("k", 0.0) for _ in range(4)] == [0.0, 0.0, 0.0, 0.0]  # burst of 4
    assert limit.wait("k", 0.0) == pytest.approx(0.5)
    assert limit.wait("other", 0.0) == 0.0
    assert limit.wait("k", 0.5) == 0.0  # one token back after half a second
    assert limit.wait("k", 100.0) == 0.0  # a long pause refills to the burst, not beyond
    assert [limit.wait("k", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.wait("k", 100.0) > 0
