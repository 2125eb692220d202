"""Parser processes: batches of archive entries parsed and encoded for COPY outside the archiver.

Parsing (JSON, the record → row conversion, COPY's binary encoding) is most of the archiver's
Python work. With ``ARCHIVE_PARSERS`` > 0 the archiver forks that many processes and hands
each batch's entries to one of them; it gets back a :class:`~server.history.rows.CopyBatch`
(bytes and a few names: cheap to pickle) while it reads, writes and acknowledges other
batches. Nothing is acknowledged here: a parser that dies loses only work, its batch's entries
are still in the archiver's hands (and pending in the group), and the pool is started again.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from jobs.archiver.streams import Entry, parse_entries
from server.history.rows import CopyBatch, copy_batch

log = logging.getLogger("longrun.archiver")

#: times a batch goes to a fresh pool after a parser died under it, before the archiver
#: parses it itself
ATTEMPTS = 3


def parse_batch(entries: Sequence[Entry]) -> tuple[CopyBatch, list[str]]:
    """The batch ready for COPY, and why each entry dropped was (see ``parse_entries``)."""
    rows, dropped = parse_entries(entries)
    return copy_batch(rows), dropped


def _start_parser(parent: int) -> None:
    """In a parser: leave Ctrl-C to the archiver (which stops its parsers; SIGTERM stays
    deadly: the pool ends the parsers of a broken pool with it), and exit when the archiver
    is gone (killed, it cannot stop its children)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


class ParserPool:
    """``processes`` forked parsers, started on first use and again after one dies."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.restarts = 0
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # fork: a parser starts in milliseconds with everything imported (and no pickled
            # settings); it touches none of the archiver's connections.
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_start_parser,
                initargs=(os.getpid(),),
            )
        return self._pool

    async def parse(self, entries: Sequence[Entry]) -> tuple[CopyBatch, list[str]]:
        """:func:`parse_batch` in a parser process; in this one after :data:`ATTEMPTS` pools died
        under the batch (a record that kills its parser then fails here, where it is seen)."""
        loop = asyncio.get_running_loop()
        for _ in range(ATTEMPTS):
            pool = self._executor()
            try:
                return await loop.run_in_executor(pool, parse_batch, entries)
            except BrokenProcessPool as exc:
                if self._pool is pool:  # the first batch to see it restarts the pool
                    self.restarts += 1
                    self._pool = None
                    pool.shutdown(wait=False, cancel_futures=True)
                    log.warning("a parser process died (%s); starting the parsers again", exc)
        return parse_batch(entries)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
