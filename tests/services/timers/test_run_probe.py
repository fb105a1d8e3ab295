"""The overlap policies' question — does the schedule's last run still run? — asked of an
HTTP server that answers like the query API (a real server on localhost)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest

from headrace.services.timers.run_probe import ApiRunProbe
from headrace.services.timers.schedules import ScheduleSpec

SPEC = ScheduleSpec(name="nightly", workflow="report", cron="0 2 * * *", tenant="acme")


class FakeApi:
    def __init__(self) -> None:
        self.statuses: dict[str, str] = {}
        self.paths: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.paths.append(self.path)
                parts = [unquote(p) for p in self.path.split("?")[0].split("/")]
                # /runs/{tenant}/{run_id}
                status = api.statuses.get(parts[3]) if parts[1:3] == ["runs", "acme"] else None
                if status is None:
                    body = {"error": {"code": "HR-RUN-002", "message": "no such run"}}
                    self._send(404, body)
                else:
                    self._send(200, {"tenant": "acme", "run_id": parts[3], "status": status})

            def _send(self, code: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    yield fake
    fake.server.shutdown()


def test_a_live_run_is_running_and_a_finished_one_is_not(api: FakeApi) -> None:
    api.statuses.update({"r-live": "running", "r-held": "suspended", "r-done": "completed"})
    probe = ApiRunProbe(api.url)
    assert probe(SPEC, "r-live") is True
    assert probe(SPEC, "r-held") is True
    assert probe(SPEC, "r-done") is False
    api.statuses["r-live"] = "failed"
    assert probe(SPEC, "r-live") is False


def test_a_run_the_api_does_not_know_yet_is_unknown(api: FakeApi) -> None:
    assert ApiRunProbe(api.url)(SPEC, "r-new") is None


def test_an_unreachable_api_is_unknown_and_left_alone_for_a_while() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    probe = ApiRunProbe(f"http://127.0.0.1:{port}", quiet=60)
    assert probe(SPEC, "r1") is None
    assert probe._down_until > 0
    # Within the quiet period no call is made: a server that now listens is not asked.
    fake = FakeApi()
    try:
        fake.statuses["r1"] = "running"
        probe.client = ApiRunProbe(fake.url).client
        assert probe(SPEC, "r1") is None
        assert fake.paths == []
        probe._down_until = 0
        assert probe(SPEC, "r1") is True
    finally:
        fake.server.shutdown()
