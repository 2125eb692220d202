"""The archiver: ``python -m jobs.archiver [--name NAME] [--drain]``.

Moves terminal records from the 16 archive streams (where the update script
put them, in the same atomic step as the terminal transition) into the
PostgreSQL history table, and keeps the learned estimates fresh.

- Reads every shard stream with the consumer group ``ARCHIVE_GROUP``, in
  batches (``ARCHIVE_BATCH``), one pipelined non-blocking XREADGROUP per shard
  (one command per stream keeps it cluster-ready; an idle archiver polls
  every quarter second). The next batch is read and parsed while the current
  one is written; with ``ARCHIVE_PARSERS`` > 0 (the default, 2) batches are
  parsed and encoded in that many forked parser processes, up to one more batch
  ahead than there are parsers (``jobs.archiver.parsers``; a parser that dies
  is replaced and its batch parsed again: nothing was acknowledged).
- Writes a batch with one binary COPY straight into ``history`` in one
  transaction (``server.history.writer.write_rows``: should a record be there
  already, the batch goes again through a staging table and ``INSERT … ON
  CONFLICT DO UPDATE``, keeping the newer outcome), and only after the commit
  acknowledges and deletes the entries (one script per shard). Dying anywhere
  in between is harmless: unacknowledged entries stay pending, a restart
  reads its own pending entries first, and a record archived twice is stored
  once.
- On a schedule, busy or idle: claims entries a dead archiver left pending,
  recomputes every service's estimate, and deletes history older than
  ``ARCHIVE_RETENTION_DAYS`` (every ``ARCHIVE_RETENTION_INTERVAL``, a bounded
  number of rows a run).
- PostgreSQL down: the batch in hand is retried with capped backoff and
  nothing is read beyond the one batch read ahead, so the backlog waits in
  the streams (see ``server.history.backlog.archive_status``). Entries another
  archiver left pending for a minute (it died for good) are claimed every
  30 s.
- A record that can never be stored (not JSON, no hash, not terminal, a
  value PostgreSQL refuses) is logged and dropped rather than blocking the
  stream forever.

Without ``DATABASE_URL`` it logs that the archive is off and idles until
stopped (honcho stops every process when one exits).

The package: ``streams`` (the archive streams as one consumer of the group sees them:
read, claim, acknowledge), ``parsers`` (the parser processes), ``archiving`` (the :class:`Archiver`: batches, writes,
upkeep), ``process`` (the process: signals, ``--drain``, no database).
"""

from jobs.archiver.archiving import Archiver
from jobs.archiver.process import main, serve

__all__ = ["Archiver", "main", "serve"]
