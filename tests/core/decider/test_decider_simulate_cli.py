"""``headrace simulate`` on the examples, with scripts, in text and json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headrace.cli.main import app
from headrace.core.simulate import Script

ROOT = Path(__file__).resolve().parents[3]
ORDER = ROOT / "examples/order-processing/order-processing.yaml"
LOAN = ROOT / "examples/loan-approval/loan-approval.yaml"

ORDER_INPUT = {
    "order": {
        "id": "o-1",
        "total": 120,
        "currency": "EUR",
        "shipping_address": {"city": "Berlin"},
        "items": [{"sku": "a", "quantity": 1, "price": 120}],
        "customer": {"id": "c-1", "email": "c@example.com"},
        "payment": {"card": "4242-4242-4242-4242"},
    }
}
LOAN_INPUT = {
    "application": {
        "id": "L-1",
        "amount": 20000,
        "term_months": 24,
        "account": "DE00",
        "applicants": [
            {"id": "a1", "name": "Ann", "email": "a@x", "country": "DE", "document": {}}
        ],
    }
}

runner = CliRunner()


def _simulate(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["simulate", *args])
    return result.exit_code, result.output


def test_order_happy_path_completes_and_lists_defaulted_tasks() -> None:
    code, out = _simulate(str(ORDER), "--input", json.dumps(ORDER_INPUT))
    assert code == 0, out
    assert "status: completed" in out
    assert "note: task step 'charge-payment' is not in the script: completed with {}" in out


def test_order_declined_card_unwinds_the_saga(tmp_path: Path) -> None:
    script = tmp_path / "declined.yaml"
    script.write_text(
        "tasks:\n"
        "  charge-payment: {error: {code: http.4xx, message: declined, retryable: false},"
        " delay: 2s}\n"
        "  fraud-check: {result: {score: 5}}\n"
    )
    code, out = _simulate(
        str(ORDER), "-i", json.dumps(ORDER_INPUT), "-s", str(script), "-f", "json"
    )
    assert code == 1  # the run failed
    doc = json.loads(out)
    assert doc["status"] == "failed"
    assert doc["outcome"]["code"] == "order.payment_failed"
    types = [e["type"] for e in doc["events"]]
    assert "ErrorCaught" in types and "CompensationCompleted" in types


def test_loan_with_underwriting_approval_is_disbursed(tmp_path: Path) -> None:
    script = tmp_path / "loan.yaml"
    script.write_text(
        "children:\n  kyc: {status: completed, output: {status: clear, hits: []}, delay: 2m}\n"
        "tasks:\n  credit-check: {result: {score: 650, report_id: R}}\n"
        "  disburse: {result: {transfer_id: T-1}}\n"
        "signals:\n  - {signal: loan.documents.uploaded, correlation: L-1, at: 1d,"
        " data: {documents: [p]}}\n"
        "approvals:\n  underwriting:\n"
        "    - {user: alice, decision: approve, at: 1h}\n"
        "    - {user: bob, decision: approve, at: 2h}\n"
    )
    input_file = tmp_path / "in.json"
    input_file.write_text(json.dumps(LOAN_INPUT))
    code, out = _simulate(str(LOAN), "-i", f"@{input_file}", "-s", str(script))
    assert code == 0, out
    assert '"outcome":"approved"' in out and '"transfer":"T-1"' in out
    assert "business time simulated as calendar time" in out


def test_bad_script_and_bad_input_say_what_is_wrong(tmp_path: Path) -> None:
    script = tmp_path / "bad.yaml"
    script.write_text("taks: {}\n")
    code, out = _simulate(str(ORDER), "-i", json.dumps(ORDER_INPUT), "-s", str(script))
    assert code == 2 and "unknown script section" in out
    code, out = _simulate(str(ORDER), "-i", "{not json")
    assert code == 2 and "neither JSON nor YAML" in out
    code, out = _simulate(str(tmp_path / "missing.yaml"))
    assert code == 2


def test_script_parsing() -> None:
    script = Script.from_dict(
        {"tasks": {"a": {"error": "x", "delay": "1s"}, "b": [{"timeout": None}]}}
    )
    assert script.tasks["a"][0].kind == "error" and script.tasks["a"][0].delay_ms == 1000
    assert script.tasks["b"][0].value == "start_to_close"
    with pytest.raises(ValueError, match="mapping"):
        Script.from_dict({"tasks": {"a": ["nope"]}})
