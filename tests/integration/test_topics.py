"""`linkwatch topics` against a real broker: what it creates, and what it says of topics made
before it asked for large records."""

from __future__ import annotations

import logging
import os

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

from streams.broker import EmbeddedBroker
from streams.kafka import MAX_MESSAGE_BYTES, create_topics
from streams.settings import Settings

pytestmark = pytest.mark.integration


def test_large_record_topics_are_created_to_take_them_and_an_old_one_is_named(
    broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = Settings(bootstrap=broker.bootstrap, namespace=f"topics{os.getpid()}a")
    with caplog.at_level(logging.WARNING, logger="streams.kafka"):
        assert set(create_topics(fresh)) == set(fresh.topics)
        assert create_topics(fresh) == []  # all there: nothing created, nothing to say
    assert not ours(caplog)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        found = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, fresh.actor_reports_topic)],
            config_filter="all",
        )
        config = found["topic"][fresh.actor_reports_topic]
        assert config["max.message.bytes"]["value"] == str(MAX_MESSAGE_BYTES)

        # A deployment from before: its actor-reports topic has the broker's 1 MB.
        old = Settings(bootstrap=broker.bootstrap, namespace=f"topics{os.getpid()}b")
        admin.create_topics([NewTopic(old.actor_reports_topic, old.partitions, 1)])
    finally:
        admin.close()
    with caplog.at_level(logging.WARNING, logger="streams.kafka"):
        created = create_topics(old)
    assert old.actor_reports_topic not in created
    [warning] = ours(caplog)
    assert old.actor_reports_topic in warning
    assert f"--add-config max.message.bytes={MAX_MESSAGE_BYTES}" in warning


def ours(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What linkwatch logged; the Kafka client's own warnings (a slow poll) are not its."""
    return [record.getMessage() for record in caplog.records if record.name == "streams.kafka"]
