"""``python -m jobs.cron``: RQ's cron scheduler enqueuing Longrun's periodic jobs, and
checking the queues' waits itself (the alerts).

Several may run (one per machine); the jobs themselves make sure only one
sweep runs at a time, and each alert is logged by one of them only.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.cron import CronJob, CronScheduler
from rq.exceptions import StopRequested

from jobs import maintenance
from jobs.context import settings
from server.infra import logs
from server.infra.backoff import Backoff
from server.infra.connections import rq_connection
from server.ops.operations import WAIT_THRESHOLDS
from server.queue.dispatch import queue_names

log = logging.getLogger("longrun.cron")


def check_interval(thresholds: Mapping[str, float]) -> float:
    """Seconds between wait checks: 10, or half the shortest threshold when that is less
    (an alert then comes at most half a threshold late), never under a second."""
    return max(1.0, min(10.0, min(thresholds.values(), default=20.0) / 2))


class Cron(CronScheduler):
    """RQ's cron scheduler, remembering that it was asked to stop (so that a Redis error
    raised while it says goodbye is not taken for an outage to ride out), and checking the
    queues' waits itself every ``check_every`` seconds.

    The wait check is not a job: a job waits in a queue for a worker, and a queue nobody
    takes from (every worker dead or stuck) is exactly what the alert must report."""

    stopping = False
    #: seconds between wait checks; 0 turns them off
    check_every = 0.0
    _next_check = 0.0

    def _request_stop(self, signum: int, frame: object) -> None:
        self.stopping = True
        super()._request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def enqueue_jobs(self) -> list[CronJob]:
        enqueued: list[CronJob] = super().enqueue_jobs()
        if self.check_every and time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + self.check_every
            try:
                maintenance.check_waits()
            except (RedisConnectionError, RedisTimeoutError, StopRequested):
                raise  # the outage (or the stop) is handled by main()
            except Exception:
                log.exception("the wait check failed; trying again in %.0f s", self.check_every)
        return enqueued

    def calculate_sleep_interval(self) -> float:
        sleep: float = super().calculate_sleep_interval()
        if self.check_every:
            sleep = min(sleep, max(0.0, self._next_check - time.monotonic()))
        return sleep


def main() -> int:
    config = settings()
    logs.configure(config)
    high, _, low = queue_names(config.key_prefix)
    cron = Cron(rq_connection(config), logging_level=config.log_level)
    cron.register(maintenance.sweep, queue_name=high, interval=config.sweep_interval, job_timeout=60, result_ttl=60)
    cron.register(maintenance.prune_tracking_list, queue_name=low, interval=300, job_timeout=120, result_ttl=60)
    cron.check_every = check_interval({**WAIT_THRESHOLDS, **config.wait_thresholds})
    backoff = Backoff(1.0, 30.0)
    while True:
        try:
            cron.start()  # type: ignore[no-untyped-call]
            return 0
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if cron.stopping:
                return 0
            # RQ's cron loop does not survive a Redis outage; we do, and start it again.
            log.warning("cron lost Redis (%s); starting again in %.0f s", exc.__class__.__name__, backoff.delay)
        try:
            time.sleep(next(backoff))
        except StopRequested:
            return 0


if __name__ == "__main__":
    sys.exit(main())
