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
    #: finished with a result (terminal)
    COMPLETED = "completed"
    #: finished with an error (terminal)
    FAILED = "failed"
    #: stopped by the person (terminal)
    CANCELLED = "cancelled"


#: finished: no change is allowed after these
TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
#: taken by a worker and not finished (the bot at work, or waiting for the person's code)
RUNNING = frozenset({Status.PROCESSING, Status.WAITING_OTP})
#: the same sets as the plain strings records carry (``record["status"]``)
TERMINAL_VALUES: frozenset[str] = frozenset(s.value for s in TERMINAL)
RUNNING_VALUES: frozenset[str] = frozenset(s.value for s in RUNNING)

#: pending → processing ⇄ waiting_otp → completed | failed | cancelled
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.PROCESSING, Status.FAILED, Status.CANCELLED}),
    Status.PROCESSING: frozenset(
        {Status.PROCESSING, Status.WAITING_OTP, Status.COMPLETED, Status.FAILED, Status.CANCELLED}
    ),
    Status.WAITING_OTP: frozenset(
        {Status.WAITING_OTP, Status.PROCESSING, Status.COMPLETED, Status.FAILED, Status.CANCELLED}
    ),
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
