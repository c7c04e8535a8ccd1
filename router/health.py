"""Provider health from free model-listing endpoints — never a completion."""

from __future__ import annotations

from router.call import Provider
from router.deadline import Clock
from router.errors import ProviderError
from router.providers.error_body import error_from_response
from router.types import HealthReport


async def check_provider(p: Provider, timeout_s: float, clock: Clock) -> HealthReport:
    """List the provider's models: reachable? key accepted? configured models present?

    The report names the URL it tried (``GET https://host/path``, no query string),
    so that a wrong base_url shows where it leads.
    """
    request = p.adapter.health_request()
    sent = p.describe(request)
    url = sent.request_line()
    t0 = clock()
    try:
        raw = await p.transport.send(request, model="-", timeout_s=min(timeout_s, p.plan.timeout_s))
        latency = clock() - t0
        if not 200 <= raw.status < 300:
            err = error_from_response(p.adapter, "-", raw.status, raw.headers, raw.body, sent=sent)
            return HealthReport(p.name, False, True, raw.status, latency, error=err.detail, url=url)
        listed = p.adapter.parse_models(raw.body)
    except ProviderError as exc:
        reachable = exc.status is not None
        return HealthReport(
            p.name, False, reachable, exc.status, clock() - t0, error=exc.detail, url=url
        )
    missing = [f"{m} ({p.adapter.missing_model_hint(m)})" for m in p.plan.models if m not in listed]
    return HealthReport(
        p.name, not missing, True, raw.status, latency, missing_models=missing, url=url
    )
