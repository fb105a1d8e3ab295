"""The API resumes from the offsets stored with its views, survives kill -9 without
double-applying, and rebuilds everything from offset 0 when its data dir is wiped."""

from __future__ import annotations

import pytest
from control_kit import TENANT, ApiProcess, Service, deploy_yaml, history, start_run
from support import wait_for

from headrace.core.views import RunViews, run_document
from headrace.services.api.client import ApiClient
from headrace.services.responder import Responder
from headrace.settings import Settings

pytestmark = pytest.mark.integration

SEQ = """
type: seq
version: 1
steps:
  - {name: s1, kind: task, queue: work}
  - {name: s2, kind: task, queue: work}
  - {name: s3, kind: task, queue: work}
"""


def _completed(c: ApiClient, n: int) -> bool:
    return c.get("/stats/runs", type="seq", fresh=True)["counts"]["completed"] == n


def _snapshot(c: ApiClient) -> tuple[dict, list, dict]:
    runs = c.get("/runs", fresh=True, full=True, limit=1000)["runs"]
    return c.get("/stats/runs"), runs, c.get("/stats/steps", type="seq")


def test_restart_resumes_kill_does_not_double_apply_and_wipe_rebuilds(
    platform: Settings, orchestrator: Service, api: ApiProcess, responder: Responder
) -> None:
    deploy_yaml(platform, SEQ)
    orchestrator.start()
    api.start()
    first = [start_run(platform, "seq", f"a-{i}") for i in range(20)]
    c = api.client()
    wait_for(lambda: _completed(c, 20), 90, "20 runs completed in the view")
    before = _snapshot(c)
    offsets = c.position()["offsets"]

    # a clean restart picks up where it stopped: nothing is folded again
    api.stop()
    api.start()
    position = c.position()
    assert position["started_from"] == offsets and position["applied_since_start"] == 0
    assert _snapshot(c) == before

    # kill -9 while events stream in: the counters still match the log exactly
    more = [start_run(platform, "seq", f"b-{i}") for i in range(30)]
    wait_for(lambda: c.position()["applied_since_start"] > 0, 60, "some new events folded")
    api.kill9()
    api.start()
    wait_for(lambda: _completed(c, 50), 120, "50 runs completed in the view")
    stats = c.get("/stats/runs")
    assert stats["total"] == 50 and stats["active"] == 0
    assert c.get("/stats/steps", type="seq")["steps"][0]["count"] == 50
    for run_id in (first[0], more[-1]):
        folded = RunViews().fold_all(history(platform, run_id))
        assert c.run(TENANT, run_id) == run_document(folded.run)
    after = _snapshot(c)

    # a wiped data dir is rebuilt from offset 0, to the same views
    api.stop()
    api.wipe()
    api.start()
    wait_for(lambda: _completed(c, 50), 120, "the rebuilt view")
    assert c.position()["started_from"] == {}
    distinct = sum(r["last_seq"] for r in after[1])  # every event of every run, once
    assert c.position()["applied_since_start"] == distinct
    assert _snapshot(c) == after
