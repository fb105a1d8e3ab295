"""Helpers for the loan-approval example's end-to-end test: a fast copy of the example,
a task responder with the domain's answers, the ``notifications`` topic."""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from headrace.core.envelope import Command, CommandType
from headrace.core.outbox import command_message
from headrace.kafka import flush, make_consumer, make_producer
from headrace.settings import Settings
from headrace.streams.partition_reader import read_partition

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "loan-approval"
CALENDAR = "banking-eu"


def _steps(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in doc["steps"]}


def example_texts() -> list[str]:
    """The child workflows as shipped."""
    return [(EXAMPLE / f"{name}.yaml").read_text() for name in ("kyc-check", "loan-servicing")]


def loan_approval(version: int, *, expiry: str, remind: str, reminders: int, sla: Any) -> str:
    """The shipped loan-approval with the business days of its waits made seconds (the
    test's ``banking-eu`` calendar is open around the clock, so business time is wall time)."""
    doc = yaml.safe_load((EXAMPLE / "loan-approval.yaml").read_text())
    doc = copy.deepcopy(doc)
    doc["version"] = version
    doc["sla"] = {"business": {"calendar": CALENDAR, "duration": "120s"}}
    steps = _steps(doc)
    uw = steps["underwriting"]
    assert uw["expiry_business"]["calendar"] == CALENDAR and uw["escalate_to_role"]
    uw["expiry_business"] = {"calendar": CALENDAR, "duration": expiry}
    uw["reminders"] = {"every": remind, "calendar": CALENDAR, "max": reminders}
    uw["sla"] = sla
    assert steps["committee-review"]["step_up"]["methods"] == ["otp", "webauthn"]
    steps["cooling-off"]["business"] = {"calendar": CALENDAR, "duration": "1s"}
    return yaml.safe_dump(doc, sort_keys=False)


def application(app_id: str) -> dict[str, Any]:
    doc = json.loads((EXAMPLE / "application.json").read_text())
    doc["application"]["id"] = app_id
    return dict(doc)


RESULTS: dict[str, Any] = {
    "verify-identity": {"verified": True, "confidence": 0.99},
    "screen-sanctions": {"hits": []},
    "credit-check": {"score": 650, "report_id": "cb-1"},  # neither clearly good nor bad
    "disburse": {"transfer_id": "tr-1"},
    "open-loan-account": {"account": "LN-1"},
}


class LoanResponder:
    """Answers every task request with the domain's result for its step (in a thread)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loan-responder", daemon=True)

    def start(self) -> LoanResponder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        s = self.settings
        consumer = make_consumer(s, f"{s.topic_prefix}loan-responder", fetch_wait_max_ms=5)
        producer = make_producer(s, "loan-responder", linger_ms=1)
        consumer.subscribe([s.topics.task_requests])
        try:
            while not self._stop.is_set():
                m = consumer.poll(0.1)
                if m is None or m.error() is not None or m.value() is None:
                    continue
                request = json.loads(m.value())
                if request.get("op") != "schedule":
                    continue
                command = Command(
                    f"{request['task_id']}/completed",
                    request["tenant"],
                    request["run_id"],
                    CommandType.CompleteTask,
                    int(time.time() * 1000),
                    {
                        "task_id": request["task_id"],
                        "attempt": request.get("attempt"),
                        "result": RESULTS.get(request["step"], {}),
                    },
                )
                out = command_message(command, s.routing)
                producer.produce(out.topic, out.value, out.key, partition=out.partition)
                flush(producer)
        finally:
            consumer.close()


def start_loan(settings: Settings, tenant: str, app_id: str, version: int) -> str:
    command = Command(
        f"start-{app_id}",
        tenant,
        app_id,
        CommandType.StartRun,
        int(time.time() * 1000),
        {"workflow": "loan-approval", "version": version, "input": application(app_id)},
    )
    _send(settings, command)
    return app_id


def upload_documents(settings: Settings, tenant: str, app_id: str) -> None:
    """What the portal does when the applicant uploads: the signal the run waits for."""
    command = Command(
        f"docs-{app_id}",
        tenant,
        app_id,
        CommandType.DeliverSignal,
        int(time.time() * 1000),
        {
            "signal": "loan.documents.uploaded",
            "correlation": app_id,
            "data": {"documents": ["payslips.pdf", "bank-statements.pdf"]},
        },
    )
    _send(settings, command)


def _send(settings: Settings, command: Command) -> None:
    producer = make_producer(settings, "loan-test")
    m = command_message(command, settings.routing)
    producer.produce(m.topic, m.value, m.key, partition=m.partition)
    flush(producer)


def notifications(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    """The run's messages on ``notifications``, in order."""
    out = []
    for p in range(settings.partitions):
        for rec in read_partition(settings.bootstrap, settings.topics.notifications, p):
            if rec.value is not None:
                body = json.loads(rec.value)
                if body["run_id"] == run_id:
                    out.append(body)
    return out
