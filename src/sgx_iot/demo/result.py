"""What a demo run reports: its planned steps, each with the expected outcome and what actually happened.

A run announces progress to a :class:`Reporter` (the CLI renders it with rich; ``--json`` and the tests use
:class:`SilentReporter`) and returns a :class:`DemoResult`. A step that was never reached (because an earlier
one broke the flow) is reported as such and counts as a failure: the demo succeeds only when every expected
outcome happened.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

NOT_REACHED = "not reached"


@dataclass(frozen=True)
class PlannedStep:
    """A step the demo will take: a stable ``key``, a title for people and the outcome it expects."""

    key: str
    title: str
    expected: str


@dataclass(frozen=True)
class Step:
    """A step and its outcome. ``ok`` is True when ``actual`` is the expected outcome; ``code`` is the refusal
    code observed (for steps that expect a refusal), ``details`` JSON-ready extra values."""

    key: str
    title: str
    expected: str
    actual: str = NOT_REACHED
    ok: bool = False
    code: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def reached(self) -> bool:
        """False when the demo stopped before this step."""
        return self.actual != NOT_REACHED

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"key": self.key, "title": self.title, "expected": self.expected, "actual": self.actual,
                "ok": self.ok, "code": self.code, "details": self.details}  # fmt: skip


@dataclass(frozen=True)
class DemoResult:
    """The outcome of a run: ``mode`` is ``"demo"`` or ``"baseline"``; truthy only when every step is ok."""

    mode: str
    steps: tuple[Step, ...]
    workdir: Path
    kept: bool
    duration: float
    platform: str = "simulated"
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when every expected outcome happened."""
        return self.error is None and all(step.ok for step in self.steps)

    def __bool__(self) -> bool:
        return self.ok

    def failures(self) -> list[Step]:
        """The steps whose expected outcome did not happen (including those never reached)."""
        return [step for step in self.steps if not step.ok]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what ``sgx-iot demo --json`` prints)."""
        return {
            "mode": self.mode,
            "ok": self.ok,
            "platform": self.platform,
            "workdir": str(self.workdir),
            "kept": self.kept,
            "duration_seconds": round(self.duration, 3),
            "error": self.error,
            "steps": [step.to_dict() for step in self.steps],
        }


class Reporter(Protocol):
    """Receives the demo's progress as it happens (sections, facts, finished steps)."""

    def section(self, title: str, intro: str = "") -> None:
        """A new section begins; ``intro`` says what it shows."""

    def fact(self, label: str, value: str) -> None:
        """A value worth showing (a path, a fingerprint, an identity field)."""

    def note(self, text: str) -> None:
        """A sentence of explanation."""

    def step(self, step: Step) -> None:
        """A planned step finished (ok or not)."""


class SilentReporter:
    """A reporter that shows nothing (``--json``, tests)."""

    def section(self, title: str, intro: str = "") -> None:
        pass

    def fact(self, label: str, value: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def step(self, step: Step) -> None:
        pass


class StepRecorder:
    """Collects the outcomes of a fixed plan of steps and forwards each to the reporter when it is recorded."""

    def __init__(self, plan: Sequence[PlannedStep], reporter: Reporter) -> None:
        self._plan = {p.key: p for p in plan}
        self._order = [p.key for p in plan]
        self._steps: dict[str, Step] = {}
        self.reporter = reporter
        self.started = time.monotonic()

    def record(self, key: str, ok: bool, actual: str, *, code: str | None = None, **details: Any) -> Step:
        """Record step ``key``'s outcome (each step once) and report it."""
        planned = self._plan[key]
        if key in self._steps:
            raise ValueError(f"step {key!r} recorded twice")
        step = Step(planned.key, planned.title, planned.expected, actual, bool(ok), code, dict(details))
        self._steps[key] = step
        self.reporter.step(step)
        return step

    def expect_code(self, key: str, expected_code: str, observed: str | None, message: str = "",
                    **details: Any) -> Step:  # fmt: skip
        """Record a step that expects a refusal with ``expected_code``; ``observed`` is the code seen (or None
        when the request was accepted); ``message`` (the refusal's sentence) goes into the details."""
        actual = "accepted (not refused)" if observed is None else f"refused: {observed}"
        if message:
            details["message"] = message
        return self.record(key, observed == expected_code, actual, code=observed, **details)

    def fail_pending(self, reason: str) -> Step | None:
        """Record the first step not recorded yet as failed with ``reason`` (the flow broke during it)."""
        key = next((k for k in self._order if k not in self._steps), None)
        return None if key is None else self.record(key, False, f"failed: {reason}")

    def result(self, mode: str, workdir: Path, kept: bool, error: str | None = None) -> DemoResult:
        """Every planned step, in plan order (unrecorded ones as not reached)."""
        steps = tuple(self._steps.get(key) or _unreached(self._plan[key]) for key in self._order)
        return DemoResult(mode, steps, workdir, kept, time.monotonic() - self.started, error=error)


def _unreached(planned: PlannedStep) -> Step:
    return Step(planned.key, planned.title, planned.expected)
