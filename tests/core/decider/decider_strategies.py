"""Hypothesis strategies: random valid definitions and a random world to run them in.

Definitions nest parallel and foreach (two levels), use choice, catch and
compensation, and every step kind. Jumps only go forward within their list
and retries are bounded, so every run must end; waits, signal waits and
approvals all have timeouts, so nothing waits forever.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from hypothesis import strategies as st

from headrace.core.decider.effects import ScheduleTask
from headrace.core.dsl.model import Definition
from headrace.core.simulate import TaskAnswer

CODES = ["boom", "card.declined", "timeout", "task.exhausted", "expression.failed", "*"]
# weighted by repetition: mostly tasks, few early exits
SHALLOW = ["task"] * 6 + [
    "set",
    "set",
    "choice",
    "choice",
    "wait",
    "wait_signal",
    "approval",
    "call",
    "spawn",
    "succeed",
]
DEEP = [*SHALLOW, "parallel", "parallel", "foreach", "foreach"]


class _Builder:
    def __init__(self, draw: st.DrawFn) -> None:
        self.draw: Any = draw
        self.counter = itertools.count()
        self.compensations: list[dict[str, Any]] = []
        self.approvals: list[str] = []
        self.calls: list[str] = []

    def name(self, prefix: str = "s") -> str:
        return f"{prefix}{next(self.counter)}"

    def steps(self, depth: int) -> list[dict[str, Any]]:
        draw = self.draw
        count = draw(st.sampled_from([4, 3, 2, 1] if depth == 0 else [3, 2, 1]))
        names = [self.name() for _ in range(count)]
        out = []
        for i, name in enumerate(names):
            later = names[i + 1 :]
            kinds = DEEP if depth < 2 else SHALLOW
            kind = draw(st.sampled_from([k for k in kinds if k != "choice" or later] + ["fail"]))
            step = self.step(kind, name, depth, later)
            if later and kind not in ("succeed",) and draw(st.sampled_from([0, 0, 1])):
                step["catch"] = [
                    {
                        "errors": [draw(st.sampled_from(CODES))],
                        "next": draw(st.sampled_from(later)),
                        **({"into": "error"} if draw(st.booleans()) else {}),
                    }
                ]
            if draw(st.sampled_from([0, 0, 0, 1])):
                step["sla"] = {"within": draw(st.sampled_from(["30s", "20m"]))}
            out.append(step)
        return out

    def step(self, kind: str, name: str, depth: int, later: list[str]) -> dict[str, Any]:
        draw = self.draw
        step: dict[str, Any] = {"name": name, "kind": kind}
        if kind == "task":
            step["queue"] = "work"
            step["retry"] = {
                "max_attempts": draw(st.sampled_from([3, 2, 1])),
                "initial_backoff": "1s",
                "non_retryable": draw(st.sampled_from([[], ["card.declined"], ["timeout"]])),
            }
            if draw(st.booleans()):
                step["into"] = f"r_{name}"
            if draw(st.sampled_from([0, 0, 1])):
                step["output"] = "{got: ., had: ($data | keys | length)}"
            if draw(st.booleans()):
                comp = self.name("c")
                self.compensations.append(
                    {"name": comp, "kind": "task", "queue": "undo", "retry": {"max_attempts": 2}}
                )
                step["compensate"] = comp
        elif kind == "set":
            step["value"] = draw(
                st.sampled_from(
                    [
                        "{n: ((.n // 0) + 1)}",
                        "(.n // 0) * 2",
                        '.n | if . == 3 then error("three") else . end',
                        "[.xs[]? | . + 1]",
                    ]
                )
            )
            step["into"] = draw(st.sampled_from([None, "v", "deep.v"]))
        elif kind == "choice":
            step["choices"] = [
                {
                    "when": draw(st.sampled_from([".n > 1", "(.n // 0) < 3", "true", ".missing"])),
                    "next": draw(st.sampled_from(later)),
                }
            ]
            if draw(st.booleans()):
                step["default"] = draw(st.sampled_from(later))
        elif kind == "wait":
            step["duration"] = draw(st.sampled_from(["1s", "5m", "1h"]))
        elif kind == "wait_signal":
            step["signal"] = "sig"
            step["timeout"] = "30m"
            if later and draw(st.booleans()):
                step["on_timeout"] = draw(st.sampled_from(later))
        elif kind == "approval":
            quorum = draw(st.sampled_from(["serial", "parallel", "threshold"]))
            step.update(
                assignees=["ann", "bob"],
                quorum=quorum,
                expiry="2h",
                veto=draw(st.booleans()),
                delegation=True,
            )
            if quorum == "threshold":
                step["threshold"] = 1
            if later and draw(st.booleans()):
                step["escalation"] = draw(st.sampled_from(later))
            if draw(st.booleans()):
                step["reminders"] = {"every": "30m", "max": 2}
            self.approvals.append(name)
        elif kind == "call":
            step["workflow"] = "child"
            self.calls.append(name)
        elif kind == "spawn":
            step["workflow"] = "side"
            step["on_parent_cancel"] = draw(st.sampled_from(["cascade", "abandon"]))
        elif kind == "fail":
            step["error"] = draw(st.sampled_from(["boom", "biz.error"]))
            step["message"] = "failed at n=${ .n }"
        elif kind == "succeed":
            if draw(st.booleans()):
                step["output"] = "{done: true}"
        elif kind == "parallel":
            mode = draw(st.sampled_from(["all", "any", "n_of_m"]))
            branches = [
                {"name": f"b{i}", "steps": self.steps(depth + 1)}
                for i in range(draw(st.integers(1, 3)))
            ]
            step["branches"] = branches
            step["join"] = {"mode": mode, **({"n": 1} if mode == "n_of_m" else {})}
            step["on_branch_failure"] = draw(st.sampled_from(["fail", "ignore", "wait"]))
            if draw(st.booleans()):
                step["into"] = "branches"
        elif kind == "foreach":
            step["items"] = draw(st.sampled_from([".xs", "[.xs[]?]", ".xs[:2]"]))
            step["concurrency"] = draw(st.integers(1, 3))
            step["steps"] = self.steps(depth + 1)
            step["on_item_failure"] = draw(st.sampled_from(["fail", "ignore", "wait"]))
            step["into"] = "each"
            if draw(st.booleans()):
                step["collect"] = "{i: $index, item: $item}"
        return step


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Definition, dict[str, Any], dict[str, Any], int]:
    """(definition, input, script for signals/approvals/children/control, responder seed)."""
    b = _Builder(draw)
    steps = b.steps(0)
    raw: dict[str, Any] = {
        "type": "random",
        "version": 1,
        "steps": steps,
        "compensations": b.compensations,
        "on_cancel": draw(st.sampled_from(["compensate", "none"])),
    }
    if draw(st.booleans()):
        raw["sla"] = {"within": "1h", "at_risk": 0.5}
    if draw(st.integers(0, 3)) == 0:
        raw["timeout"] = draw(st.sampled_from(["10m", "3h"]))
    definition = Definition.model_validate(raw)
    run_input = {
        "n": draw(st.integers(0, 4)),
        "xs": draw(st.lists(st.integers(0, 9), max_size=3)),
        "meta": draw(st.dictionaries(st.sampled_from("zyxa"), st.integers(), max_size=3)),
    }
    script: dict[str, Any] = {
        "signals": [
            {"signal": "sig", "at": f"{m}m", "data": {"m": m}}
            for m in draw(st.lists(st.integers(0, 60), max_size=3))
        ],
        "approvals": {
            name: [
                {
                    "user": draw(st.sampled_from(["ann", "bob", "eve"])),
                    "decision": draw(st.sampled_from(["approve", "reject"])),
                    "at": f"{draw(st.integers(0, 150))}m",
                }
                for _ in range(draw(st.integers(0, 3)))
            ]
            for name in b.approvals
        },
        "children": {
            name: draw(
                st.sampled_from(
                    [
                        {"status": "completed", "output": {"child": 1}, "delay": "1m"},
                        {"status": "failed", "error": {"code": "x", "message": "no"}},
                    ]
                )
            )
            for name in b.calls
        },
        "control": draw(
            st.sampled_from(
                [
                    [],
                    [{"at": "2s", "command": "suspend"}, {"at": "20m", "command": "resume"}],
                    [{"at": "3m", "command": "cancel", "reason": "test"}],
                    [{"at": "1s", "command": "terminate"}],
                    [{"at": "0s", "command": "update", "value": 7, "into": "u"}],
                ]
            )
        ),
    }
    return definition, run_input, script, draw(st.integers(0, 2**32))


def random_responder(seed: int) -> Any:
    """Complete, fail (retryable or not) or time out tasks at random, after random delays."""
    rng = random.Random(seed)

    def answer(task: ScheduleTask, now: int) -> TaskAnswer:
        delay = rng.choice([0, 1000, 60_000])
        roll = rng.random()
        if roll < 0.7:
            keys = rng.sample(["zeta", "alpha", "mid", "b"], rng.randint(0, 3))
            return TaskAnswer("result", {k: rng.randint(0, 9) for k in keys}, delay)
        if roll < 0.9:
            code = rng.choice(["boom", "card.declined"])
            return TaskAnswer(
                "error", {"code": code, "message": "random", "retryable": rng.random() < 0.8}, delay
            )
        return TaskAnswer("timeout", rng.choice(["start_to_close", "heartbeat"]), delay)

    return answer
