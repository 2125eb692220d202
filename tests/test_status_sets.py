"""The status groups have one owner (server.domain.status) and agree with the state machine."""

from __future__ import annotations

from server.domain import display
from server.domain.status import RUNNING, RUNNING_VALUES, TERMINAL, TERMINAL_VALUES, TRANSITIONS, Status
from server.record import is_terminal


def test_terminal_is_where_the_state_machine_ends() -> None:
    assert {s for s, onward in TRANSITIONS.items() if not onward} == TERMINAL
    assert RUNNING | TERMINAL | {Status.PENDING} == set(Status) and not RUNNING & TERMINAL
    assert {"completed", "failed", "cancelled"} == TERMINAL_VALUES
    assert {"processing", "waiting_otp", "waiting_input"} == RUNNING_VALUES
    assert display.TERMINAL is TERMINAL_VALUES and display.RUNNING is RUNNING_VALUES
    assert all(is_terminal(s) for s in TERMINAL_VALUES) and not is_terminal("processing")
