"""``python -m jobs.cron``: RQ's cron scheduler enqueuing Longrun's periodic jobs.

Several may run (one per machine); the jobs themselves make sure only one
sweep runs at a time.
"""

from __future__ import annotations

import logging
import sys
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.cron import CronScheduler
from rq.exceptions import StopRequested

from jobs import maintenance
from jobs.context import settings
from jobs.queues import queue_names
from server import logs
from server.connections import rq_connection

log = logging.getLogger("longrun.cron")


class Cron(CronScheduler):
    """RQ's cron scheduler, remembering that it was asked to stop (so that a Redis error
    raised while it says goodbye is not taken for an outage to ride out)."""

    stopping = False

    def _request_stop(self, signum: int, frame: object) -> None:
        self.stopping = True
        super()._request_stop(signum, frame)  # type: ignore[no-untyped-call]


def main() -> int:
    config = settings()
    logs.configure(config)
    high, _, low = queue_names(config.key_prefix)
    cron = Cron(rq_connection(config), logging_level=config.log_level)
    cron.register(maintenance.sweep, queue_name=high, interval=config.sweep_interval, job_timeout=60, result_ttl=60)
    cron.register(maintenance.prune_tracking_list, queue_name=low, interval=300, job_timeout=120, result_ttl=60)
    cron.register(maintenance.check_waits, queue_name=high, interval=10, job_timeout=30, result_ttl=60)
    delay = 1.0
    while True:
        try:
            cron.start()  # type: ignore[no-untyped-call]
            return 0
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if cron.stopping:
                return 0
            # RQ's cron loop does not survive a Redis outage; we do, and start it again.
            log.warning("cron lost Redis (%s); starting again in %.0f s", exc.__class__.__name__, delay)
        try:
            time.sleep(delay)
        except StopRequested:
            return 0
        delay = min(delay * 2, 30.0)


if __name__ == "__main__":
    sys.exit(main())
