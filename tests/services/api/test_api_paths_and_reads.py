"""The API in process, over a view store filled here: odd run ids, unknown routes, reads that
must not block the event loop, and a shutdown that never closes the store under a thread.

The HTTP server is the real one (aiohttp on a free port, in a thread) and the client is
:class:`ApiClient`; only the control test needs the broker (the command goes to Kafka).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from headrace.core.codec import decode_command
from headrace.core.decider import State, apply
from headrace.core.dsl.model import Definition
from headrace.core.envelope import Command, CommandType, Event
from headrace.dev import free_port_block
from headrace.errors import ErrorCode, HeadraceError
from headrace.services.api import queries
from headrace.services.api import web as api_web
from headrace.services.api.client import ApiClient, run_path
from headrace.services.api.indexer import Indexer
from headrace.services.api.service import release
from headrace.services.api.store import ViewStore
from headrace.settings import Settings
from headrace.streams.partition_reader import read_partition
from headrace.topic_admin import ensure_topics

ODD = ["a/b", "x/y/z", "c:d@e+f=g", "%2F"]  # run ids RUN_ID_PATTERN allows
DEFINITION = Definition.model_validate(
    {"type": "odd", "version": 1, "steps": [{"name": "a", "kind": "task", "queue": "q"}]}
)


def _started(tenant: str, run_id: str) -> list[Event]:
    command = Command("c1", tenant, run_id, CommandType.StartRun, 1000, {"input": {}})
    return apply(State(), command, DEFINITION)


@dataclass
class Served:
    url: str
    api: api_web.Api
    store: ViewStore
    indexer: Indexer
    settings: Settings

    def client(self) -> ApiClient:
        return ApiClient(self.url, timeout=10)


def serve(settings: Settings, tmp_path: Path) -> Iterator[Served]:
    store = ViewStore(tmp_path / "views", settings.topics.events)
    indexer = Indexer(settings, store)  # not started: the views are written here
    events = [(0, i, e) for rid in ODD for i, e in enumerate(_started("acme", rid))]
    store.write(indexer.fold(events))
    api = api_web.Api(settings, store, indexer, wait_max=2.0)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(api.app())
    port = free_port_block(1)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{port}", api, store, indexer, settings)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        store.close()


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[Served]:
    """No broker: reads only."""
    yield from serve(Settings(bootstrap="127.0.0.1:9", topic_prefix="off."), tmp_path)


@pytest.fixture
def online(settings: Settings, tmp_path: Path) -> Iterator[Served]:
    ensure_topics(settings)
    yield from serve(settings, tmp_path)


# -- ids with '/' and other characters -------------------------------------------------------


def test_the_client_addresses_run_ids_with_slashes_and_the_route_decodes_them(
    offline: Served,
) -> None:
    assert run_path("acme", "a/b") == "/runs/acme/a%2Fb"
    with offline.client() as c:
        for rid in ODD:
            view = c.run("acme", rid)
            assert (view["tenant"], view["run_id"]) == ("acme", rid)
        with pytest.raises(HeadraceError) as missing:
            c.run("acme", "no/such")
    assert missing.value.code is ErrorCode.RUN_NOT_FOUND
    assert missing.value.message.startswith("run not found: no run acme/no/such")


def test_an_unknown_route_is_a_json_error_and_a_bare_404_is_not_found_not_unavailable(
    offline: Served,
) -> None:
    # as an old client sent it: the id's '/' split the path
    with offline.client() as c, pytest.raises(HeadraceError) as raw:
        c.get("/runs/acme/a/b")
    assert raw.value.code is ErrorCode.API_BAD_REQUEST
    assert "no endpoint GET /runs/acme/a/b" in raw.value.message
    assert "%2F" in raw.value.message

    # a 404 without the API's JSON body (a proxy, an older API) for a run
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="404: Not Found")

    c = ApiClient("http://api.invalid")
    c._http = httpx.Client(base_url=c.url, transport=httpx.MockTransport(handler))
    with pytest.raises(HeadraceError) as bare, c:
        c.control("suspend", "acme", "gone", reason="x")
    assert bare.value.code is ErrorCode.RUN_NOT_FOUND
    assert "run not found" in bare.value.message and "unavailable" not in bare.value.message


@pytest.mark.integration
def test_control_of_a_run_id_with_a_slash_reaches_that_run(online: Served) -> None:
    with online.client() as c:
        accepted = c.control("suspend", "acme", "x/y/z", reason="audit", actor="ann")
    assert (accepted["tenant"], accepted["run_id"], accepted["op"]) == ("acme", "x/y/z", "suspend")
    s = online.settings
    p = s.routing.partition("acme", "x/y/z")
    (rec,) = list(read_partition(s.bootstrap, s.topics.commands, p, 0))
    cmd = decode_command(rec.value or b"")
    assert (cmd.run_id, cmd.type) == ("x/y/z", CommandType.SuspendRun)


# -- reads off the event loop -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/runs", "/stats/steps", "/stats/runs", "/approvals"])
def test_a_slow_scan_does_not_hold_up_other_requests(
    offline: Served, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    release_scan = threading.Event()
    scanning = threading.Event()

    def slow(real: Any) -> Any:
        def scan(*a: Any, **kw: Any) -> Any:
            scanning.set()
            release_scan.wait(10)
            return real(*a, **kw)

        return scan

    for name in ("list_runs", "step_stats", "run_counts", "list_approvals"):
        monkeypatch.setattr(queries, name, slow(getattr(queries, name)))
    got: list[Any] = []

    def call() -> None:
        with offline.client() as c:
            got.append(c.get(path))

    caller = threading.Thread(target=call)
    caller.start()
    assert scanning.wait(10), "the slow scan never started"
    started = time.monotonic()
    with offline.client() as c:
        assert "offsets" in c.get("/position")
    assert time.monotonic() - started < 2
    release_scan.set()
    caller.join(10)
    assert len(got) == 1


def test_the_sla_report_runs_off_the_loop_and_reports_truncation(
    offline: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = api_web.sla_report
    entered = threading.Event()
    release_scan = threading.Event()

    def slow(*a: Any, **kw: Any) -> Any:
        entered.set()
        release_scan.wait(10)
        return real(*a, **kw, budget=1)

    monkeypatch.setattr(api_web, "sla_report", slow)
    monkeypatch.setattr(api_web.Deadlines, "resolver", lambda self, wait=10.0: lambda b: None)
    got: list[Any] = []

    def call() -> None:
        with offline.client() as c:
            got.append(c.sla_report())

    caller = threading.Thread(target=call)
    caller.start()
    assert entered.wait(5)
    with offline.client() as c:
        started = time.monotonic()
        c.get("/position")
        assert time.monotonic() - started < 2
    release_scan.set()
    caller.join(10)
    assert got and got[0]["truncated"] is True  # four runs, a budget of one


def test_step_statistics_stop_at_their_budget() -> None:
    class Store:
        def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
            for i in range(10):
                yield b"d", b'{"type": "t", "step": "s", "ended_at": %d, "duration_ms": 5}' % i

    steps, truncated = queries.step_stats(Store(), wtype=None, budget=4)  # type: ignore[arg-type]
    assert truncated and steps[0]["count"] == 4
    assert queries.step_stats(Store(), wtype=None)[1] is False  # type: ignore[arg-type]


# -- shutdown -------------------------------------------------------------------------------------


def test_the_store_stays_open_while_the_indexer_or_a_read_still_runs(tmp_path: Path) -> None:
    settings = Settings(bootstrap="127.0.0.1:9", topic_prefix="off.")
    store = ViewStore(tmp_path / "views", settings.topics.events)
    indexer = Indexer(settings, store)
    api = api_web.Api(settings, store, indexer, wait_max=1.0)
    stuck = threading.Event()
    # an indexer thread that does not stop (a batch that takes too long)
    indexer._thread = threading.Thread(target=stuck.wait, args=(10,), daemon=True)
    indexer._thread.start()
    assert release(api, indexer, store, timeout=0.2) is False
    assert store.offsets() == {}  # still open: a closed Rdict raises
    stuck.set()
    indexer._thread.join(5)

    # a read in the pool that has not finished
    store2 = ViewStore(tmp_path / "views2", settings.topics.events)
    indexer2 = Indexer(settings, store2)
    api2 = api_web.Api(settings, store2, indexer2, wait_max=1.0)
    reading = threading.Event()

    async def read() -> None:
        await api2.offload(reading.wait, 10)

    loop = asyncio.new_event_loop()
    task = loop.create_task(read())
    loop.run_until_complete(asyncio.sleep(0.1))
    assert release(api2, indexer2, store2, timeout=0.2) is False
    assert store2.offsets() == {}
    reading.set()
    loop.run_until_complete(task)
    loop.close()
    assert release(api2, indexer2, store2, timeout=5) is True
    store.close()
