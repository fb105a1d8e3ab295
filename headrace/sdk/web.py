"""A worker's HTTP port: ``/metrics`` for Prometheus and ``/healthz`` for probes.

prometheus-client's own ``start_http_server`` answers every path with the
metrics and binds all interfaces by default; a worker binds
``HEADRACE_WEB_HOST`` (127.0.0.1 unless told, 0.0.0.0 in the image) and
answers ``/healthz`` with its real state, so a probe can tell a worker that
consumes from one that is starting, draining or whose consumer failed. The
server runs in its own daemon threads, so a busy event loop never delays a
probe.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("headrace.sdk.web")

Health = Callable[[], tuple[bool, dict[str, Any]]]
"""``(healthy, body)``: the worker's state for ``/healthz`` (200 if healthy, else 503)."""


class WebServer:
    """Serves ``/metrics`` and ``/healthz`` on ``host:port`` until :meth:`close`."""

    def __init__(self, host: str, port: int, health: Health) -> None:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        self._httpd = Server((host, port), _handler(health))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="headrace-web",
            daemon=True,
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> WebServer:
        self._thread.start()
        host, port = self.address
        log.info("serving /metrics and /healthz on %s:%d", host, port)
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the worker's own log lines

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._answer(200, encoder(REGISTRY), content_type)
            elif path == "/healthz":
                ok, body = health()
                self._answer(200 if ok else 503, json.dumps(body).encode(), "application/json")
            else:
                self._answer(404, b"not found: try /metrics or /healthz\n", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
