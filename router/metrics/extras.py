"""The optional extras behind the exporters, and the error naming the one to install.

``router.metrics.prometheus`` needs the ``prometheus`` extra (prometheus_client),
``router.metrics.otel`` the ``otel`` extra (opentelemetry-api and -sdk). Importing
either without its extra raises an ImportError that says which extra to install,
instead of a bare "No module named ..." from inside the router.
"""

from __future__ import annotations

DISTRIBUTION = "yaml-llm-router"


def missing_extra(module: str, extra: str, cause: ImportError) -> ImportError:
    """The ImportError to raise from ``module`` when its optional dependency is missing."""
    return ImportError(
        f'{module} needs the "{extra}" extra: pip install "{DISTRIBUTION}[{extra}]" ({cause})',
        name=cause.name,
    )
