"""Settings: defaults, HEADRACE_* environment, the HEADRACE_CONFIG file, tenant_spread parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from headrace.errors import ErrorCode, HeadraceError
from headrace.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("HEADRACE_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    s = Settings()
    assert s.bootstrap == "127.0.0.1:9092"
    assert s.topic_prefix == "headrace."
    assert s.partitions == 6
    assert s.tenant_spread == {}
    assert s.spread("anyone") == 1
    assert s.topics.events == "headrace.events"


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_BOOTSTRAP", "10.0.0.1:9092,10.0.0.2:9092")
    monkeypatch.setenv("HEADRACE_TOPIC_PREFIX", "acme.")
    monkeypatch.setenv("HEADRACE_PARTITIONS", "12")
    monkeypatch.setenv("HEADRACE_MIN_INSYNC_REPLICAS", "2")
    monkeypatch.setenv("HEADRACE_HOME", "/var/lib/headrace")
    s = Settings()
    assert s.bootstrap == "10.0.0.1:9092,10.0.0.2:9092"
    assert s.topics.commands == "acme.commands"
    assert s.partitions == 12
    assert s.min_insync_replicas == 2
    assert s.home == Path("/var/lib/headrace")


def test_yaml_file_is_read_and_environment_wins_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "headrace.yaml"
    cfg.write_text(
        "bootstrap: file:9092\ntopic-prefix: fromfile.\npartitions: 3\ntenant_spread: {bigco: 4}\n"
    )
    monkeypatch.setenv("HEADRACE_CONFIG", str(cfg))
    s = Settings()
    assert (s.bootstrap, s.topic_prefix, s.partitions) == ("file:9092", "fromfile.", 3)
    assert s.spread("bigco") == 4

    monkeypatch.setenv("HEADRACE_PARTITIONS", "9")
    assert Settings().partitions == 9
    assert Settings(partitions=2).partitions == 2


def test_json_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "headrace.json"
    cfg.write_text(json.dumps({"bootstrap": "json:9092", "tenant_spread": "a=2,b=3"}))
    monkeypatch.setenv("HEADRACE_CONFIG", str(cfg))
    s = Settings()
    assert s.bootstrap == "json:9092"
    assert s.tenant_spread == {"a": 2, "b": 3}


def test_missing_or_broken_config_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADRACE_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(HeadraceError) as err:
        Settings()
    assert err.value.code is ErrorCode.CONFIG_INVALID
    assert "nope.yaml" in err.value.message

    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    monkeypatch.setenv("HEADRACE_CONFIG", str(bad))
    with pytest.raises(HeadraceError) as err:
        Settings()
    assert "mapping" in err.value.message


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("bigco=4,acme=2", {"bigco": 4, "acme": 2}),
        (" bigco = 4 , ", {"bigco": 4}),
        ("", {}),
        ('{"bigco": 4}', {"bigco": 4}),
    ],
)
def test_tenant_spread_from_environment(
    raw: str, parsed: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADRACE_TENANT_SPREAD", raw)
    s = Settings()
    assert s.tenant_spread == parsed
    for tenant, spread in parsed.items():
        assert s.spread(tenant) == spread
    assert s.spread("someone-else") == 1


@pytest.mark.parametrize("raw", ["bigco", "bigco=x", "bigco=4,acme"])
def test_malformed_tenant_spread_is_rejected(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_TENANT_SPREAD", raw)
    with pytest.raises(ValidationError, match="tenant=N"):
        Settings()


def test_invalid_numbers_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_PARTITIONS", "0")
    with pytest.raises(ValidationError):
        Settings()
