"""What aiohttp keeps of a connection's HTTP life that its WebSocket never uses again.

An idle socket's memory is mostly aiohttp's per-connection state (README, "Memory per idle
socket"). Once the handshake is answered and the WebSocket reader owns the connection, a few
of those objects are dead weight for the socket's whole life; :func:`drop_http_state` lets
them go (about 1.7 KB a socket). All of them are private to aiohttp (written against 3.14):
each is reached with ``getattr`` and replaced only when it is there, of the type and in the
state described below, so an aiohttp that renamed or reworked one keeps its own (the socket
then costs what it did before; nothing breaks). ``tests/test_heartbeat.py`` checks that they
are still dropped, so an upgrade that stops it is noticed.

The request object itself (its headers, cookies, match info, ``app``) stays: a socket's
frames are answered as its caller (``access.caller`` reads the headers again).
"""

from __future__ import annotations

import random
from collections import deque
from functools import partial
from typing import Any

from aiohttp import web

#: the protocol's queue of parsed, not yet handled requests, for every upgraded connection:
#: always empty (``maxlen=0``: were anything appended, it would be discarded, never seen by
#: another connection)
_NO_REQUESTS: deque[Any] = deque(maxlen=0)
#: the WebSocket writer's tasks for compressing large frames, shared: our sockets never
#: compress (``compress=False``), and a task there is only held, never read
_NO_TASKS: set[Any] = set()
#: the writer's source of masking keys, shared: only a client masks its frames
_MASK_BITS = partial(random.Random().getrandbits, 32)


def drop_http_state(request: web.Request, ws: web.WebSocketResponse) -> int:
    """Drop, after the upgrade, what the connection kept for HTTP; returns how many were dropped."""
    dropped = 0
    protocol = request.protocol
    # aiohttp's RequestHandler. Once ``WebSocketResponse.prepare`` has called
    # ``set_parser``, ``_payload_parser`` is the WebSocket reader and ``_upgraded`` is set:
    # ``data_received`` feeds every byte to that reader, ``pause_reading``/``resume_reading``
    # skip the HTTP parser when upgraded, and ``start()`` leaves its loop after this request
    # (``keep_alive(False)``). Only aiohttp's ``connection_lost`` clears ``_payload_parser``,
    # and it sets ``_parser`` to None itself.
    if getattr(protocol, "_payload_parser", None) is not None and getattr(protocol, "_upgraded", False) is True:
        # - ``_parser``: the HTTP request parser (llhttp, and what it had buffered)
        if getattr(protocol, "_parser", None) is not None:
            protocol._parser = None
            dropped += 1
        # - ``_messages``: a deque (624 B) of requests waiting for ``start()``, empty for good
        #   (``data_received`` appends only while ``_payload_parser`` is None)
        messages = getattr(protocol, "_messages", None)
        if type(messages) is deque and not messages and messages is not _NO_REQUESTS:
            protocol._messages = _NO_REQUESTS
            dropped += 1
    # aiohttp's WebSocketWriter: its lock and task set serve compressed frames only, its
    # masking keys a client only.
    writer = getattr(ws, "_writer", None)
    if writer is not None and getattr(writer, "compress", None) == 0 and getattr(writer, "use_mask", None) is False:
        tasks = getattr(writer, "_background_tasks", None)
        if type(tasks) is set and not tasks and tasks is not _NO_TASKS:
            writer._background_tasks = _NO_TASKS
            dropped += 1
        bits = getattr(writer, "get_random_bits", None)
        if isinstance(bits, partial) and bits is not _MASK_BITS:
            writer.get_random_bits = _MASK_BITS
            dropped += 1
    return dropped
