"""The domain: what a request is, independent of any framework or store.

Statuses and their state machine, the service catalog and its form rules, the
protocol messages (socket frames, bot events, bot answers), the exception tree,
the texts people read (English and Persian) and what a page shows for a record.
Imports nothing from redis, aiohttp, rq or psycopg (`make lint` checks).
"""
