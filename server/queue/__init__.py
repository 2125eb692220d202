"""The job queues: RQ queue names, job ids (`{hash}-{phase}`) and enqueueing.

The one place that knows RQ's API on the request side; the workers in `jobs/` run
what is enqueued here.
"""
