"""The shop's domain services for the order-processing example: inventory, payments, shipping.

Three small JSON-over-HTTP services — other teams' APIs, as far as the workflow
is concerned — in one process, with nothing but the Python standard library.
The workflow calls them through headrace's built-in HTTP connector (queue
``http``): no worker code. State lives in memory and is lost on restart.

    python examples/order-processing/shop.py [--port 8480]

Every POST honours the ``Idempotency-Key`` header the connector sends (the
same on every attempt of a step): a repeated request gets the first answer
again and changes nothing, as with Stripe or Adyen. Server errors (5xx) are
not remembered, so a retry after one really is tried again.

Failures on purpose, for the demo:

* the card ``4000-0000-0000-0002`` is declined: ``402`` — an answer, not an
  outage, so the connector reports ``http.4xx`` (not retryable) and the
  workflow fails and compensates;
* the card ``4000-0000-0000-0119`` meets a payment processor that is briefly
  unavailable: the first attempt gets ``503`` with ``Retry-After: 1``, the
  retry succeeds (``--flaky-card``, ``--retry-after`` change them);
* a SKU without enough stock is refused with ``409``.

Endpoints (JSON in, JSON out)::

    POST /inventory/reservations {order_id, items: [{sku, quantity}]} → {reservation_id, expires_at}
    POST /inventory/releases     {reservation_id}                   → {reservation_id, status}
    POST /payments/charges       {order_id, amount, currency, card} → {charge_id, status}
    POST /payments/refunds       {charge_id, amount}                → {refund_id, status}
    POST /shipping/shipments     {order_id, items, address}         → {shipment_id, tracking_number}
    GET  /state                  everything above, for people and tests
    GET  /healthz
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_PORT = 8480
DECLINED_CARDS = ("4000-0000-0000-0002",)
FLAKY_CARDS = ("4000-0000-0000-0119",)
STOCK = {"KETTLE-01": 50, "MUG-02": 200, "TEAPOT-03": 20, "GRINDER-04": 0}


class Refusal(Exception):
    """An answer other than success: status, error code, message, extra headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


Reply = tuple[int, dict[str, Any]]


class Shop:
    """The state of the three services, behind one lock."""

    def __init__(
        self,
        declined: tuple[str, ...] = DECLINED_CARDS,
        flaky: tuple[str, ...] = FLAKY_CARDS,
        retry_after_s: int = 1,
    ) -> None:
        self.lock = threading.Lock()
        self.declined, self.flaky, self.retry_after_s = set(declined), set(flaky), retry_after_s
        self.stock = dict(STOCK)
        self.reservations: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.shipments: dict[str, dict[str, Any]] = {}
        self.answered: dict[tuple[str, str], Reply] = {}  # (path, idempotency key) → reply
        self.unavailable_once: set[str] = set()  # keys that got their 503 already
        self.counter = 0
        self.routes: dict[str, Callable[[dict[str, Any], str], Reply]] = {
            "/inventory/reservations": self.reserve,
            "/inventory/releases": self.release,
            "/payments/charges": self.charge,
            "/payments/refunds": self.refund,
            "/shipping/shipments": self.ship,
        }

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter:05d}"

    def post(self, path: str, body: dict[str, Any], key: str) -> Reply:
        """Answer one POST; a repeated idempotency key gets the first answer."""
        handler = self.routes.get(path)
        if handler is None:
            raise Refusal(404, "not_found", f"no endpoint POST {path}")
        with self.lock:
            if key and (path, key) in self.answered:
                return self.answered[(path, key)]
            try:
                reply = handler(body, key)
            except Refusal as exc:
                if exc.status >= 500:
                    raise  # not remembered: the next attempt is tried for real
                reply = (exc.status, {"error": exc.code, "message": exc.message})
            if key:
                self.answered[(path, key)] = reply
            return reply

    # -- inventory ---------------------------------------------------------------------

    def reserve(self, body: dict[str, Any], key: str) -> Reply:
        items = body.get("items") or []
        for item in items:
            sku, qty = item.get("sku"), int(item.get("quantity") or 0)
            if sku not in self.stock:
                raise Refusal(409, "unknown_sku", f"no such SKU {sku}")
            if self.stock[sku] < qty:
                raise Refusal(
                    409, "out_of_stock", f"{sku}: {qty} wanted, {self.stock[sku]} in stock"
                )
        for item in items:
            self.stock[item["sku"]] -= int(item["quantity"])
        rid = self._id("res")
        expires = datetime.now(UTC) + timedelta(minutes=30)
        self.reservations[rid] = {
            "order_id": body.get("order_id"),
            "items": items,
            "status": "reserved",
            "expires_at": expires.isoformat(timespec="seconds"),
        }
        return 201, {"reservation_id": rid, "expires_at": self.reservations[rid]["expires_at"]}

    def release(self, body: dict[str, Any], key: str) -> Reply:
        rid = body.get("reservation_id")
        res = self.reservations.get(str(rid))
        if res is None:
            raise Refusal(404, "unknown_reservation", f"no reservation {rid}")
        if res["status"] == "reserved":
            for item in res["items"]:
                self.stock[item["sku"]] += int(item["quantity"])
            res["status"] = "released"
        return 200, {"reservation_id": rid, "status": res["status"]}

    # -- payments ----------------------------------------------------------------------

    def charge(self, body: dict[str, Any], key: str) -> Reply:
        card = str(body.get("card") or "")
        if card in self.declined:
            raise Refusal(402, "card_declined", f"card ending {card[-4:]} was declined")
        if card in self.flaky and key not in self.unavailable_once:
            self.unavailable_once.add(key)
            raise Refusal(
                503,
                "processor_unavailable",
                "the card processor is briefly unavailable — try again",
                {"Retry-After": str(self.retry_after_s)},
            )
        cid = self._id("ch")
        self.charges[cid] = {
            "order_id": body.get("order_id"),
            "amount": body.get("amount"),
            "currency": body.get("currency"),
            "card": f"…{card[-4:]}",
            "status": "captured",
        }
        return 201, {"charge_id": cid, "status": "captured"}

    def refund(self, body: dict[str, Any], key: str) -> Reply:
        cid = str(body.get("charge_id"))
        charge = self.charges.get(cid)
        if charge is None:
            raise Refusal(404, "unknown_charge", f"no charge {cid}")
        charge["status"] = "refunded"
        rid = self._id("re")
        self.refunds[rid] = {"charge_id": cid, "amount": body.get("amount")}
        return 200, {"refund_id": rid, "status": "refunded"}

    # -- shipping ----------------------------------------------------------------------

    def ship(self, body: dict[str, Any], key: str) -> Reply:
        sid = self._id("shp")
        tracking = f"HR{int(time.time() * 1000) % 10**10:010d}"
        self.shipments[sid] = {
            "order_id": body.get("order_id"),
            "tracking_number": tracking,
            "address": body.get("address"),
        }
        return 201, {"shipment_id": sid, "tracking_number": tracking}

    def state(self) -> dict[str, Any]:
        with self.lock:
            return json.loads(
                json.dumps(
                    {
                        "stock": self.stock,
                        "reservations": self.reservations,
                        "charges": self.charges,
                        "refunds": self.refunds,
                        "shipments": self.shipments,
                    }
                )
            )


def make_server(shop: Shop, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass  # one line per request below instead

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, {"status": "ok"})
            elif self.path == "/state":
                self._send(200, shop.state())
            else:
                self._send(404, {"error": "not_found", "message": f"no endpoint GET {self.path}"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            key = self.headers.get("Idempotency-Key") or ""
            headers: dict[str, str] = {}
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                status, answer = shop.post(self.path, body, key)
            except ValueError as exc:
                status, answer = 400, {"error": "bad_request", "message": str(exc)}
            except Refusal as exc:
                status, answer = exc.status, {"error": exc.code, "message": exc.message}
                headers = exc.headers
            stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
            print(f"{stamp} POST {self.path} key={key or '-'} → {status} {answer}", flush=True)
            self._send(status, answer, headers)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--decline-card", action="append", help="a card to decline (402)")
    parser.add_argument("--flaky-card", action="append", help="a card that meets one 503 first")
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After of the 503 (s)")
    args = parser.parse_args(argv)
    shop = Shop(
        tuple(args.decline_card or DECLINED_CARDS),
        tuple(args.flaky_card or FLAKY_CARDS),
        args.retry_after,
    )
    try:
        server = make_server(shop, args.port, args.host)
    except OSError as exc:
        sys.exit(f"shop: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    print(f"shop: inventory, payments and shipping on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
