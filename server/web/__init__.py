"""The HTTP edge: the only package that imports `aiohttp.web`.

`app` is the composition root: it builds the stores, hub, queue and services and
hands them to the handlers (`api`, `pages`, `sockets`, `dashboard`, …).
"""
