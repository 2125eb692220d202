"""Longrun: watch long jobs live."""
