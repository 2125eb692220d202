"""Infrastructure every process shares: Redis clients, logs, Prometheus counters,
bot event signatures.
"""
