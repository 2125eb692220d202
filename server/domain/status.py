"""Request statuses, their groups (terminal, running) and the state machine every change goes through.

Every Python module takes the status sets from here (the Lua script in
``server.record.lua`` and ``static/progress.js`` keep their own copies).

The transition table is also rendered into the Lua update script
(``server.record``), so Python and Redis enforce the same rules.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    #: created and queued; no worker has picked it up yet
    PENDING = "pending"
    #: a worker or the bot is working on it
    PROCESSING = "processing"
    #: the bot is waiting for the person's one-time code
    WAITING_OTP = "waiting_otp"
    #: the bot is waiting for the person's answer to another prompt (captcha, choice, ...)
    WAITING_INPUT = "waiting_input"
    #: finished with a result (terminal)
    COMPLETED = "completed"
    #: finished with an error (terminal)
    FAILED = "failed"
    #: stopped by the person (terminal)
    CANCELLED = "cancelled"


#: finished: no change is allowed after these
TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
#: taken by a worker and not finished (the bot at work, or waiting for the person)
RUNNING = frozenset({Status.PROCESSING, Status.WAITING_OTP, Status.WAITING_INPUT})
#: waiting for the person: the code, or an answer to another prompt
WAITING = frozenset({Status.WAITING_OTP, Status.WAITING_INPUT})
#: the same sets as the plain strings records carry (``record["status"]``)
TERMINAL_VALUES: frozenset[str] = frozenset(s.value for s in TERMINAL)
RUNNING_VALUES: frozenset[str] = frozenset(s.value for s in RUNNING)

_ON_THE_WAY = frozenset(
    {
        Status.PROCESSING,
        Status.WAITING_OTP,
        Status.WAITING_INPUT,
        Status.COMPLETED,
        Status.FAILED,
        Status.CANCELLED,
    }
)
#: pending → processing ⇄ waiting_otp | waiting_input → completed | failed | cancelled
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.PROCESSING, Status.FAILED, Status.CANCELLED}),
    Status.PROCESSING: _ON_THE_WAY,
    Status.WAITING_OTP: _ON_THE_WAY,
    Status.WAITING_INPUT: _ON_THE_WAY,
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


def lua_transition_table() -> str:
    """The transition table as a Lua table literal, for the update script."""
    rows = []
    for src, dests in TRANSITIONS.items():
        inner = ", ".join(f"{d.value} = true" for d in sorted(dests))
        rows.append(f"{src.value} = {{{inner}}}")
    return "{" + ", ".join(rows) + "}"
