"""Running Longrun on one machine: child processes for the tests and the benchmarks.

Neither ``tests/`` nor ``bench/`` imports the other; what both need lives here.
"""
