"""``headrace deploy`` and ``headrace definitions`` and the catalog under them, on a broker."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from ingress_kit import AUDIT, ORDER, create_topics, delete_topics, read_topic, topic_size
from support import wait_for
from typer.testing import CliRunner

from headrace.cli.main import app
from headrace.core.dsl.load import load_definition
from headrace.definitions import DefinitionCatalog, Deployed, deploy, digest_of
from headrace.errors import ErrorCode, HeadraceError
from headrace.kafka import make_producer, produce_sync
from headrace.settings import Settings

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def topics(settings: Settings) -> Iterator[Settings]:
    create_topics(settings)
    yield settings
    delete_topics(settings)


def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {"HEADRACE_BOOTSTRAP": settings.bootstrap, "HEADRACE_TOPIC_PREFIX": settings.topic_prefix}
    result = runner.invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_deploy_publishes_then_redeploy_is_unchanged(topics: Settings, tmp_path: Path) -> None:
    order, audit = write(tmp_path, "order.yaml", ORDER), write(tmp_path, "audit.yaml", AUDIT)
    code, out, err = cli(topics, "deploy", order, audit)
    assert code == 0, err
    assert "deployed  order@1" in out and "deployed  audit@1" in out
    assert "HR260" in err  # audit has no input_schema: a warning, printed, not blocking
    code, out, _ = cli(topics, "deploy", order)
    assert code == 0
    assert "unchanged order@1" in out
    assert topic_size(topics, topics.topics.definitions) == 2


def test_a_changed_body_under_a_deployed_version_is_refused(
    topics: Settings, tmp_path: Path
) -> None:
    assert cli(topics, "deploy", write(tmp_path, "v1.yaml", ORDER))[0] == 0
    changed = ORDER.replace("minimum: 0", "minimum: 1")
    code, _, err = cli(topics, "deploy", write(tmp_path, "changed.yaml", changed))
    assert code == 1
    assert "HR-DEF-003" in err and "order@1 is already deployed with a different body" in err
    assert "bump `version`" in err
    assert topic_size(topics, topics.topics.definitions) == 1


def test_files_with_errors_are_all_reported_and_nothing_is_deployed(
    topics: Settings, tmp_path: Path
) -> None:
    good = write(tmp_path, "good.yaml", ORDER)
    bad_step = write(tmp_path, "bad.yaml", AUDIT.replace("kind: set", "kind: sett"))
    not_yaml = write(tmp_path, "broken.yaml", "type: [unclosed")
    code, _, err = cli(topics, "deploy", good, bad_step, not_yaml, str(tmp_path / "missing.yaml"))
    assert code == 1
    assert "bad.yaml" in err and "broken.yaml" in err and "missing.yaml" in err
    assert "nothing was deployed" in err
    assert topic_size(topics, topics.topics.definitions) == 0


def test_lint_errors_refuse_the_deploy(topics: Settings, tmp_path: Path) -> None:
    dangling = ORDER.replace(
        "retry: {max_attempts: 3}}", "retry: {max_attempts: 3}, next: nowhere}"
    )
    code, _, err = cli(topics, "deploy", write(tmp_path, "d.yaml", dangling))
    assert code == 1 and "nowhere" in err
    assert topic_size(topics, topics.topics.definitions) == 0


def test_definitions_list_and_show(topics: Settings, tmp_path: Path) -> None:
    v2 = ORDER.replace("version: 1", "version: 2")
    files = [write(tmp_path, f, t) for f, t in (("a", ORDER), ("b", v2), ("c", AUDIT))]
    assert cli(topics, "deploy", *files, "--by", "alice")[0] == 0

    code, out, _ = cli(topics, "definitions", "list", "--format", "json")
    assert code == 0
    rows = {r["type"]: r for r in json.loads(out)}
    assert rows["order"]["versions"] == [1, 2] and rows["order"]["latest"] == 2
    assert rows["order"]["deployed_by"] == "alice" and rows["order"]["deployed_at"] > 0
    code, out, _ = cli(topics, "definitions", "list")
    assert "order" in out and "1, 2" in out and "alice" in out

    code, out, _ = cli(topics, "definitions", "show", "order")
    assert code == 0
    assert out.startswith("# order@2 deployed")
    assert yaml.safe_load(out)["version"] == 2
    code, out, _ = cli(topics, "definitions", "show", "order@1", "--format", "json")
    record = json.loads(out)
    assert record["version"] == 1 and record["deployed_by"] == "alice"
    assert record["digest"] == digest_of(load_definition(ORDER))
    code, out, _ = cli(topics, "definitions", "show", "order@1", "--source")
    assert out == ORDER

    code, _, err = cli(topics, "definitions", "show", "order@7")
    assert code == 1 and "HR-DEF-002" in err and "deployed versions: 1, 2" in err


def test_a_running_catalog_sees_a_deploy(topics: Settings) -> None:
    seen: list[str] = []
    with DefinitionCatalog(topics).start(wait=30) as catalog:
        catalog.on_deployed(lambda d: seen.append(d.key))
        deploy(topics, [(load_definition(ORDER), ORDER)])
        wait_for(lambda: catalog.get("order") is not None, 10, "the catalog to see order@1")
        got = catalog.get("order", 1)
        assert got is not None and got.source == ORDER
        assert seen == ["order@1"]


def test_the_first_record_of_a_version_wins(topics: Settings) -> None:
    first = load_definition(ORDER)
    second = load_definition(ORDER.replace("minimum: 0", "minimum: 5"))
    producer = make_producer(topics, "racer")
    for d, by in ((first, "first"), (second, "second")):
        record = Deployed(d, digest_of(d), "", 1, by)
        produce_sync(producer, topics.topics.definitions, record.to_record(), key=d.key)
    with DefinitionCatalog(topics).start(wait=30) as catalog:
        winner = catalog.get("order", 1)
        assert winner is not None and winner.deployed_by == "first"
    with pytest.raises(HeadraceError) as refused:
        deploy(topics, [(second, ORDER)])
    assert refused.value.code is ErrorCode.DEFINITION_CONFLICT
    assert deploy(topics, [(first, ORDER)])[0].status == "unchanged"


class _Stale:
    """A catalog that has not yet read a rival's deploy when ``deploy`` checks it: the race."""

    def __init__(self, inner: DefinitionCatalog) -> None:
        self.inner = inner
        self.blind = True

    def get(self, workflow_type: str, version: int | None = None) -> Deployed | None:
        return None if self.blind else self.inner.get(workflow_type, version)

    def wait_position(self, position: int, timeout: float = 30.0) -> None:
        self.inner.wait_position(position, timeout)
        self.blind = False

    def __getattr__(self, name: str) -> Callable[..., object]:
        return getattr(self.inner, name)  # type: ignore[no-any-return]


def test_a_deploy_that_loses_a_race_is_refused_and_leaves_the_winner_last(
    topics: Settings,
) -> None:
    rival = load_definition(ORDER.replace("minimum: 0", "minimum: 5"))
    deploy(topics, [(rival, "rival")], by="rival")
    with DefinitionCatalog(topics).start(wait=30) as inner:
        stale = _Stale(inner)
        with pytest.raises(HeadraceError) as lost:
            deploy(topics, [(load_definition(ORDER), ORDER)], catalog=stale)  # type: ignore[arg-type]
    assert lost.value.code is ErrorCode.DEFINITION_CONFLICT
    assert "deployed concurrently" in lost.value.message
    records = read_topic(topics, topics.topics.definitions, 3)
    # rival, ours, rival again: compaction keeps the last record of a key
    assert [json.loads(r.value or b"")["deployed_by"] for r in records][::2] == ["rival", "rival"]
    assert json.loads(records[-1].value or b"")["digest"] == digest_of(rival)
