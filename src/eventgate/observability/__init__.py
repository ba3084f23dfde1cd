"""Metrics, structured logs and trace context."""
