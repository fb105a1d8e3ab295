"""A real HTTP(S) server on localhost that answers as a test scripts it, and a small PKI.

``ScriptedServer`` records every request (method, path, query, headers, body,
client certificate) and answers from a per-route script: a fixed ``Reply``, a
list of replies used in turn (the last one repeats), or a function of the
request. A reply can be slow (``delay_s``: the server waits before it answers)
or trickle its body. ``make_pki`` writes a self-signed CA, a server certificate
for 127.0.0.1/localhost and a client certificate, for mTLS tests.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list → JSON; str/bytes as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait this long (or until the server closes) before answering
    trickle_s: float = 0.0  # pause between body bytes


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    client_cn: str | None

    def json(self) -> Any:
        return json.loads(self.body)


Script = Reply | list[Reply] | Callable[[Request], Reply]


class ScriptedServer:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[tuple[str, str], Script] = {}
        self.requests: list[Request] = []
        self._calls: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self.closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                cn = None
                if isinstance(self.connection, ssl.SSLSocket):
                    cert = self.connection.getpeercert()
                    if cert:
                        cn = dict(x[0] for x in cert["subject"]).get("commonName")
                req = Request(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    cn,
                )
                reply = server._reply(req)
                if reply.delay_s and server.closing.wait(reply.delay_s):
                    return
                payload = reply.body
                if isinstance(payload, dict | list):
                    payload = json.dumps(payload).encode()
                    reply.headers.setdefault("Content-Type", "application/json")
                elif isinstance(payload, str):
                    payload = payload.encode()
                payload = payload or b""
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if reply.trickle_s:
                        for i in range(len(payload)):
                            self.wfile.write(payload[i : i + 1])
                            self.wfile.flush()
                            if server.closing.wait(reply.trickle_s):
                                return
                    else:
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def route(self, method: str, path: str, script: Script) -> None:
        self.routes[(method.upper(), path)] = script

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def _reply(self, req: Request) -> Reply:
        key = (req.method, req.path)
        with self._lock:
            self.requests.append(req)
            n = self._calls.get(key, 0)
            self._calls[key] = n + 1
        script = self.routes.get(key)
        if script is None:
            return Reply(404, {"error": f"no route {req.method} {req.path}"})
        if isinstance(script, Reply):
            return Reply(
                script.status, script.body, dict(script.headers), script.delay_s, script.trickle_s
            )
        if isinstance(script, list):
            r = script[min(n, len(script) - 1)]
            return Reply(r.status, r.body, dict(r.headers), r.delay_s, r.trickle_s)
        return script(req)

    def hits(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port() -> int:
    """A localhost port with nothing listening (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA nobody's certificate chains to

    def server_context(self, require_client_cert: bool = True) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.ca)
        return ctx


def make_pki(folder: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(k: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def write_cert(c: x509.Certificate, path: Path) -> Path:
        path.write_bytes(c.public_bytes(serialization.Encoding.PEM))
        return path

    def ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        k = key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(k, hashes.SHA256())
        )
        return k, cert

    def leaf(
        cn: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, server: bool
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        k = key()
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return k, b.sign(ca_key, hashes.SHA256())

    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = ca("headrace test CA")
    _, other = ca("someone else's CA")
    s_key, s_cert = leaf("localhost", ca_key, ca_cert, server=True)
    c_key, c_cert = leaf("headrace-connector", ca_key, ca_cert, server=False)
    return Pki(
        ca=write_cert(ca_cert, folder / "ca.pem"),
        server_cert=write_cert(s_cert, folder / "server.pem"),
        server_key=write_key(s_key, folder / "server.key"),
        client_cert=write_cert(c_cert, folder / "client.pem"),
        client_key=write_key(c_key, folder / "client.key"),
        other_ca=write_cert(other, folder / "other-ca.pem"),
    )
