"""`headrace topics ensure|list` against a real broker: idempotent, policies as the table says."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from headrace.dev import free_port_block
from headrace.errors import ErrorCode, HeadraceError
from headrace.settings import Settings
from headrace.topic_admin import describe, ensure_topics, list_topics, plan_topics
from headrace.topology import TOPICS

pytestmark = pytest.mark.integration


def names(settings: Settings) -> list[str]:
    return [f"{settings.topic_prefix}{t.suffix}" for t in TOPICS]


def test_ensure_creates_every_topic_once_and_then_finds_them(settings: Settings) -> None:
    first = ensure_topics(settings)
    assert sorted(first.created) == sorted(names(settings))
    assert first.found == [] and first.mismatches == []

    second = ensure_topics(settings)
    assert second.created == []
    assert sorted(second.found) == sorted(names(settings))
    assert second.mismatches == []


def test_topics_get_the_partitions_and_cleanup_policy_of_the_table(settings: Settings) -> None:
    ensure_topics(settings, partitions=4)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    infos = {t.name: t for t in describe(admin, names(settings))}
    for spec in TOPICS:
        info = infos[f"{settings.topic_prefix}{spec.suffix}"]
        want_parts = 4 if spec.run_partitioned else spec.partitions
        assert info.partitions == want_parts, spec.suffix
        assert info.cleanup_policy == ("compact" if spec.compacted else "delete"), spec.suffix
        for key, value in spec.config.items():
            assert info.config[key] == value, (spec.suffix, key)
    assert infos[f"{settings.topic_prefix}definitions"].cleanup_policy == "compact"
    assert infos[f"{settings.topic_prefix}events"].config["retention.ms"] == "-1"


def test_min_insync_replicas_is_set_when_configured(settings: Settings) -> None:
    bound = settings.model_copy(update={"min_insync_replicas": 1})
    ensure_topics(bound)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    for info in describe(admin, names(settings)):
        assert info.config["min.insync.replicas"] == "1", info.name


def test_a_topic_with_another_partition_count_is_found_and_reported(settings: Settings) -> None:
    commands = f"{settings.topic_prefix}commands"
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    admin.create_topics([NewTopic(commands, 2, 1)])[commands].result()

    report = ensure_topics(settings, partitions=6)
    assert commands in report.found and commands not in report.created
    assert any(commands in m and "2 partitions" in m for m in report.mismatches)


def test_replication_above_the_broker_count_is_refused_before_creating(settings: Settings) -> None:
    with pytest.raises(HeadraceError) as err:
        ensure_topics(settings, replication=5)
    assert err.value.code is ErrorCode.CONFIG_INVALID
    assert "replication 5" in err.value.message
    assert list_topics(settings) == []


def test_explicit_replication_setting_is_used_and_default_defers_to_broker() -> None:
    unset = plan_topics(Settings(bootstrap="x:1"))
    assert {p.replication for p in unset} == {-1}
    explicit = plan_topics(Settings(bootstrap="x:1", replication_factor=1))
    assert {p.replication for p in explicit} == {1}


def test_unreachable_cluster_is_a_clear_error() -> None:
    port = free_port_block(1)
    with pytest.raises(HeadraceError) as err:
        ensure_topics(Settings(bootstrap=f"127.0.0.1:{port}", topic_prefix="nowhere."))
    assert err.value.code is ErrorCode.KAFKA_UNAVAILABLE
    assert f"127.0.0.1:{port}" in err.value.message


def cli(*args: str, settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    env.update(
        {
            "HEADRACE_BOOTSTRAP": settings.bootstrap,
            "HEADRACE_TOPIC_PREFIX": settings.topic_prefix,
            "COLUMNS": "200",
            "NO_COLOR": "1",
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "headrace.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_ensure_prints_created_then_found_and_list_shows_the_policies(
    settings: Settings,
) -> None:
    first = cli("topics", "ensure", settings=settings)
    assert first.returncode == 0, first.stderr
    assert f"{len(TOPICS)} created, 0 found" in first.stdout
    assert f"created {settings.topic_prefix}definitions (1 partitions" in first.stdout

    second = cli("topics", "ensure", settings=settings)
    assert second.returncode == 0, second.stderr
    assert f"0 created, {len(TOPICS)} found" in second.stdout

    listed = cli("topics", "list", settings=settings)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if "│" in line}
    assert set(names(settings)) <= set(rows)
    assert "compact" in rows[f"{settings.topic_prefix}definitions"]
    assert "delete" in rows[f"{settings.topic_prefix}events"]
