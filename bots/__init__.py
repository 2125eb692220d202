"""Bots: the SDK bots use to report to Longrun, and demo bots that behave like real ones."""
