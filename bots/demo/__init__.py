"""Demo bot API (``python -m bots.demo``, port 9999): three services that behave like real bots.

- ``credit-score-rating``: logs in, solves a captcha (with ``DEMO_PROMPTS``: shows
  the person one, drawn by ``captcha``), texts a one-time code to the person (the
  demo outbox), checks it (wrong codes cost attempts, resend works) and fetches a
  report — about a minute at real speed.
- ``vehicle-fines``: four steps, no code (with ``DEMO_PROMPTS``: asks which vehicle
  when the national id has two).
- ``video-generation``: long; answers 202 at once and finishes through the SDK.

``BOT_SPEED`` divides every delay (tests run at 50-200×). Calls carrying the
same ``Idempotency-Key`` share one execution, so a retried call never makes
the bot act twice. ``POST /demo/faults`` makes the next matching calls fail
in a chosen way (down, hanging, silent…) so that failure handling can be seen
and tested over real HTTP.

Modules: ``portal`` (the sessions, the outbox of texted codes, pacing and reporting),
``captcha`` (the picture, with Pillow),
``scenarios`` (the three services), ``faults`` (fault injection), ``app`` (the
aiohttp app and its handlers), ``__main__`` (the process).
"""

from bots.demo.app import create_bot_app

__all__ = ["create_bot_app"]
