"""Live fan-out: one pub/sub connection per process relayed to every watcher, and
the status cache it keeps current. No aiohttp here: the sockets are in `server.web`.
"""
