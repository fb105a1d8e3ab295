"""The loan-approval demo's domain services, in one process (see README.md here).

* a headrace worker (``headrace.sdk``) for the queues ``kyc``, ``credit-bureau``
  and ``payments``;
* a stub of the bank's HTTP services on 127.0.0.1:8090 (sanctions screening,
  document requests, applicant notifications), which the built-in HTTP
  connector calls for the ``http`` tasks;
* a reader of the ``notifications`` topic that prints what a mailer or a chat
  bot would send (approval requests, reminders, escalations, delegations, SLA
  warnings).

Run it beside ``headrace dev up``: ``.venv/bin/python examples/loan-approval/services.py``.
Credit scores are made up from the application id: ids with ``good`` score
760 (auto-approved up to 50 000), ``bad`` 500 (declined), anything else
600-699 (documents, then underwriting).
"""

from __future__ import annotations

import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from headrace.kafka import make_consumer
from headrace.sdk import TaskContext, Worker
from headrace.settings import get_settings

HTTP_PORT = 8090

worker = Worker(queues=["kyc", "credit-bureau", "payments"], concurrency=8)


@worker.task("verify-identity")
def verify_identity(input: dict[str, Any]) -> dict[str, Any]:
    forged = "forged" in json.dumps(input.get("document", {}))
    return {"verified": not forged, "confidence": 0.2 if forged else 0.97}


@worker.task("credit-check")
def credit_check(input: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    app_id = str(input["application_id"])
    if "good" in app_id:
        score = 760
    elif "bad" in app_id:
        score = 500
    else:
        score = 600 + zlib.crc32(app_id.encode()) % 100
    return {"score": score, "report_id": f"cb-{ctx.idempotency_key[-12:]}"}


@worker.task("disburse")
def disburse(input: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    print(f"payments: {input['amount']} paid out for {input['application_id']}", flush=True)
    return {"transfer_id": f"tr-{zlib.crc32(ctx.idempotency_key.encode()):08x}"}


@worker.task("open-loan-account")
def open_loan_account(input: dict[str, Any]) -> dict[str, Any]:
    return {"account": f"LN-{input['loan_id']}"}


class BankStub(BaseHTTPRequestHandler):
    """POST /kyc/sanctions-screenings, /loans/document-requests, /notifications."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/kyc/sanctions-screenings":
            hits = ["OFAC SDN"] if "sanctioned" in str(body.get("name", "")).lower() else []
            answer: dict[str, Any] = {"hits": hits}
        elif self.path in ("/loans/document-requests", "/notifications"):
            print(f"bank: {self.path} {json.dumps(body)}", flush=True)
            answer = {"accepted": True}
        else:
            self.send_error(404)
            return
        raw = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def describe(n: dict[str, Any]) -> str:
    """One line per notification, as a mailer would address it."""
    to = [*n["recipients"]["users"], *(f"@{r}" for r in n["recipients"]["roles"])]
    where = f"{n['tenant']}/{n['run_id']} {n['step'] or ''}".strip()
    extra = {k: v for k, v in n["details"].items() if k in ("reason", "count", "status", "to")}
    due = f" due {n['due']}" if n.get("due") else ""
    return f"{n['kind']:<20} {where} → {', '.join(to) or '(watchers)'}{due} {extra or ''}"


def print_notifications() -> None:
    settings = get_settings()
    consumer = make_consumer(settings, f"{settings.topic_prefix}loan-demo-notifier")
    consumer.subscribe([settings.topics.notifications])
    while True:
        m = consumer.poll(1.0)
        value = None if m is None or m.error() is not None else m.value()
        if value is not None:
            print(f"notify: {describe(json.loads(value))}", flush=True)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", HTTP_PORT), BankStub)
    threading.Thread(target=server.serve_forever, name="bank-stub", daemon=True).start()
    threading.Thread(target=print_notifications, name="notifier", daemon=True).start()
    print(f"bank stub on http://127.0.0.1:{HTTP_PORT}; worker on kyc, credit-bureau, payments")
    worker.run()


if __name__ == "__main__":
    main()
