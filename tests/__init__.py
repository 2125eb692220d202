"""Longrun tests: real Redis, real PostgreSQL, real processes, a real browser."""
