"""Operational figures for the dashboard, metrics and alerts."""
