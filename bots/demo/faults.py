"""Fault injection: ``POST /demo/faults`` makes the next matching calls misbehave.

A :class:`Fault` matches calls by service, phase (``run``, ``otp`` or ``any``) and data
fields, for ``count`` calls. Most modes replace the portal's answer (down, busy, fatal,
silent, hanging, stalled); ``late_otp``, ``short_otp``, ``long_otp`` and ``fixed_code`` are
not failures but change how the portal treats that request.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from bots.demo.portal import Answer, Cancelled, Portal, Session
from server.domain.protocol import ProgressEvent

FAULT_MODES = (
    "unavailable",
    "retryable",
    "fatal",
    "hang",
    "silent",
    "stall",
    "busy",
    "late_otp",
    "short_otp",
    "long_otp",
    "fixed_code",
)
#: modes that shape the session instead of failing the call
SESSION_MODES = ("late_otp", "short_otp", "long_otp", "fixed_code")
CANCELLED: Answer = (200, {"status": "error", "error": "cancelled", "retryable": False})


@dataclass
class Fault:
    mode: str
    count: int
    service: str | None = None
    match: dict[str, Any] = field(default_factory=dict)
    phase: str = "run"
    #: fixed_code: the code the portal texts (tests need to know it in advance)
    code: str = ""

    def applies(self, slug: str, data: dict[str, Any], phase: str) -> bool:
        if self.count <= 0 or (self.service and self.service != slug):
            return False
        if self.phase != "any" and self.phase != phase:
            return False
        return all(data.get(k) == v for k, v in self.match.items())


class FaultPlan:
    """The faults still to happen, first added first used."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def __len__(self) -> int:
        return len(self.faults)

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def clear(self) -> None:
        self.faults.clear()

    def take(self, slug: str, data: dict[str, Any], phase: str) -> Fault | None:
        for fault in self.faults:
            if fault.applies(slug, data, phase):
                fault.count -= 1
                self.faults = [f for f in self.faults if f.count > 0]
                return fault
        return None


def shape_session(fault: Fault, session: Session) -> None:
    """Apply one of SESSION_MODES to the request's session."""
    if fault.mode == "late_otp":
        session.answer_delay = 2.0
    elif fault.mode == "short_otp":
        session.otp_ttl = 10
    elif fault.mode == "long_otp":
        session.otp_ttl = 3600  # a code that outlives a test's whole run
    else:
        session.fixed_code = fault.code


async def misbehave(portal: Portal, fault: Fault, h: str, session: Session) -> Answer:
    """The answer a failing call gives (after hanging or reporting, for some modes)."""
    if fault.mode in ("stall", "busy"):
        # stall: one report, then silence; busy: keeps reporting, never finishes
        await portal.tell(h, ProgressEvent(3, None, "Logging in"), session)
        while fault.mode == "busy" and not session.cancelled.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await session.cancelled.wait()
            with contextlib.suppress(Cancelled):
                await portal.tell(h, ProgressEvent(5, None, "Still logging in"), session)
        await session.cancelled.wait()
        return CANCELLED
    if fault.mode == "unavailable":
        return 503, {"status": "error", "error": "The portal is down."}
    if fault.mode == "retryable":
        return 200, {"status": "error", "error": "The portal is busy; try again.", "retryable": True}
    if fault.mode == "fatal":
        return 200, {"status": "error", "error": "No record was found for this national ID.", "retryable": False}
    if fault.mode == "silent":
        return 202, {"status": "accepted"}
    if fault.mode == "hang":
        await session.cancelled.wait()
        return CANCELLED
    raise ValueError(f"not a failing fault mode: {fault.mode}")
