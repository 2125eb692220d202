"""The request use cases: every change to a record goes through the lifecycle;
the sweeper fails what went silent; the poll and create limits.
"""
