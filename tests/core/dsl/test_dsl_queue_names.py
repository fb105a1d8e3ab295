"""Queue names that would collide with another queue's priority band or DLQ topic are refused."""

from __future__ import annotations

import textwrap

import pytest

from headrace.core.dsl.load import load


def _findings(queue: str) -> list[str]:
    text = textwrap.dedent(
        f"""\
        type: order
        version: 1
        steps:
          - name: charge
            kind: task
            queue: {queue}
            timeouts: {{start_to_close: 30s}}
        """
    )
    return [f.format() for f in load(text, "order.yaml").findings]


@pytest.mark.parametrize(
    ("queue", "collides_with"),
    [
        ("orders.p9", "the priority-9 band of queue 'orders'"),
        ("orders.p6", "the priority-6 band of queue 'orders'"),
        ("orders.p0", "the priority-0 band of queue 'orders'"),
        ("x.dlq", "the DLQ of queue 'x'"),
        ("orders.p9.dlq", "the DLQ of queue 'orders.p9'"),
    ],
)
def test_a_queue_named_like_a_band_or_a_dlq_is_refused(queue: str, collides_with: str) -> None:
    [message] = _findings(queue)
    assert message.startswith("order.yaml:6:5: error HR006: ")
    assert f"queue {queue!r} ends in" in message and collides_with in message
    assert "may not end in '.p<digit>' or '.dlq'" in message


@pytest.mark.parametrize(
    "queue", ["orders", "payments", "http", "credit-bureau", "orders.p10", "a.dlqx", "p9", "x.pay"]
)
def test_other_queue_names_stay_valid(queue: str) -> None:
    assert _findings(queue) == []
