"""``headrace dev``'s background services: ports, restarts on new arguments, others' processes."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
from support import wait_for

from headrace.dev import free_port_block
from headrace.dev.services import SERVICES, DevService, other_services
from headrace.errors import ErrorCode, HeadraceError
from headrace.settings import Settings


def test_service_ports_count_up_from_the_web_port_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_DEV_WEB_PORT", "16000")
    monkeypatch.setenv("HEADRACE_API_PORT", "18123")
    ports = {s.name: s.http_port() for s in SERVICES}
    assert ports == {
        "orchestrator": 16000,
        "router": 16001,
        "timers": 16002,
        "tasks": 16003,
        "http": 16005,
        "signals": 16006,
        "api": 18123,
    }
    orchestrator = SERVICES[0].argv()
    assert orchestrator[-4:] == ["serve", "orchestrator", "--web-port", "16000"]
    monkeypatch.setenv("HEADRACE_DEV_WEB_PORT", "nope")
    with pytest.raises(HeadraceError, match="HEADRACE_DEV_WEB_PORT"):
        SERVICES[0].http_port()


def _server(port: int) -> DevService:
    """A stand-in service: Python's own HTTP server on ``port``."""
    return DevService(
        "demo-static",
        "http.server",
        ("{port}", "--bind", "127.0.0.1"),
        port_from=lambda: port,
        health="/",
    )


def _answers(service: DevService) -> bool:
    url = service.health_url()
    assert url is not None
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


def test_start_is_idempotent_restarts_on_new_arguments_and_others_are_found(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path)
    first = _server(free_port_block(1))
    try:
        pid = first.start(settings)
        wait_for(lambda: _answers(first), 20, "the stand-in to answer")
        assert first.start(settings) == pid  # already running with these arguments
        assert first.current(settings.home) == pid

        moved = _server(free_port_block(1))  # the same name, another port
        assert moved.current(settings.home) is None
        new_pid = moved.start(settings)
        assert new_pid != pid
        wait_for(lambda: _answers(moved), 20, "the restarted stand-in to answer")

        # `headrace dev down` stops what others started beside the platform's services
        [(name, proc)] = other_services(settings.home)
        assert name == "demo-static" and proc.pid() == new_pid
        assert proc.stop() and proc.pid() is None
    finally:
        first.process(settings.home).stop()


def test_a_taken_port_is_refused_up_front_naming_the_holder(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port_block(1)))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(HeadraceError) as refused:
            _server(port).start(Settings(home=tmp_path))
    assert refused.value.code is ErrorCode.PORT_IN_USE
    assert f"port {port}" in refused.value.message and "demo-static" in refused.value.message
    assert not other_services(tmp_path)  # nothing was started
