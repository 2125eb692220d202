"""History: the archive of finished requests in PostgreSQL, its queries and the
estimates learned from it.
"""
