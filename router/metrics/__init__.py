"""Metrics and traces of a Router, all built on the observer hook (router.observe).

- :class:`~router.metrics.stats.Stats` — a cheap in-process snapshot; every
  Router carries one (``router.stats()``).
- ``router.metrics.prometheus.register(router)`` — Prometheus counters,
  histograms and scrape-time gauges (extra ``yaml-llm-router[prometheus]``).
- ``router.metrics.otel.instrument(router)`` — OpenTelemetry GenAI spans
  (extra ``yaml-llm-router[otel]``).

Importing this package imports neither prometheus_client nor opentelemetry:
the exporters live in their own modules and cost nothing until registered.
See docs/operations.md.
"""

from __future__ import annotations

from router.metrics.stats import Stats

__all__ = ["Stats"]
