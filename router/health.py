"""Provider health from free model-listing endpoints — never a completion.

One listing request per provider serves two purposes: :func:`check_provider` (is
it reachable, is the key accepted, are the configured models there; what
``Router.health()`` and ``router health`` report) and :func:`verify_keys` (a key
the provider rejects fails the start; what ``Router.start(verify_keys=True)``
and ``router validate --online`` run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from router.call import Provider
from router.deadline import Clock
from router.errors import ConfigError, ConfigProblem, ProviderError
from router.logger import get_logger
from router.providers.error_body import error_from_response
from router.types import HealthReport, KeyCheck

__all__ = ["KEY_CHECK_TIMEOUT_S", "check_provider", "verify_keys"]

# How long the key check at start waits for each provider (they run concurrently).
KEY_CHECK_TIMEOUT_S: Final = 5.0
# Statuses that mean the key itself was refused (so does any status whose body says
# so: Gemini answers a bad key with 400 "API key not valid", an AuthenticationError).
_REJECTED: Final = frozenset({401, 403})

_log = get_logger()


async def check_provider(p: Provider, timeout_s: float, clock: Clock) -> HealthReport:
    """List the provider's models: reachable? key accepted? configured models present?

    The report names the URL it tried (``GET https://host/path``, no query string),
    so that a wrong base_url shows where it leads.
    """
    request = p.adapter.health_request()
    sent = p.describe(request)
    url = sent.request_line()
    proxy = None if p.plan.proxy is None else p.plan.proxy.display()
    t0 = clock()
    try:
        raw = await p.transport.send(request, model="-", timeout_s=min(timeout_s, p.plan.timeout_s))
        latency = clock() - t0
        if not 200 <= raw.status < 300:
            err = error_from_response(p.adapter, "-", raw.status, raw.headers, raw.body, sent=sent)
            return HealthReport(
                p.name,
                False,
                True,
                raw.status,
                latency,
                error=err.detail,
                url=url,
                proxy=proxy,
                error_kind=err.kind,
            )
        listed = p.adapter.parse_models(raw.body)
    except ProviderError as exc:
        reachable = exc.status is not None
        return HealthReport(
            p.name,
            False,
            reachable,
            exc.status,
            clock() - t0,
            error=exc.detail,
            url=url,
            proxy=proxy,
            error_kind=exc.kind,
        )
    missing = [f"{m} ({p.adapter.missing_model_hint(m)})" for m in p.plan.models if m not in listed]
    return HealthReport(
        p.name, not missing, True, raw.status, latency, missing_models=missing, url=url, proxy=proxy
    )


async def verify_keys(
    providers: Sequence[Provider],
    source: Path,
    clock: Clock,
    timeout_s: float = KEY_CHECK_TIMEOUT_S,
) -> tuple[KeyCheck, list[HealthReport]]:
    """Check each keyed provider's key with one listing request, all at once.

    Returns the check and the health reports it made (a cache may keep them).
    A provider that could not be checked is logged as a warning
    (``key_check_unverified``) and listed in ``KeyCheck.unverified``.

    Raises:
        ConfigError: one problem per provider that answered 401 or 403 (or whose
            answer says the key is bad: an AuthenticationError), at its
            ``api_key_env`` (naming the provider and the variable, never the key).
    """
    keyed = [p for p in providers if p.plan.key is not None and p.plan.mock is None]
    skipped = tuple(p.name for p in providers if p not in keyed)
    reports = list(await asyncio.gather(*(check_provider(p, timeout_s, clock) for p in keyed)))
    problems: list[ConfigProblem] = []
    verified: list[str] = []
    unverified: list[HealthReport] = []
    for p, report in zip(keyed, reports, strict=True):
        if report.status is not None and 200 <= report.status < 300:
            verified.append(p.name)
        elif report.status in _REJECTED or report.error_kind == "auth":
            problems.append(_rejected(p, report, source))
        else:
            unverified.append(report)
            _log.warning(
                "key_check_unverified",
                provider=p.name,
                status=report.status,
                error=report.error,
                proxy=report.proxy,
            )
    if problems:
        raise ConfigError(problems)
    return KeyCheck(tuple(verified), tuple(unverified), skipped), reports


def _rejected(p: Provider, report: HealthReport, source: Path) -> ConfigProblem:
    """The problem for a refused key: the provider, the variable and the status; the
    upstream's own message (redacted: a body may echo the key) if it gave one."""
    var = p.plan.key_env or "its key variable"
    via = "" if report.proxy is None else f" (through proxy {report.proxy})"
    why = f": {report.error}" if report.error else ""
    message = (
        f"provider {p.name!r} rejected the key in environment variable {var}: HTTP"
        f" {report.status} from its model listing{via}{why}"
    )
    return _problem_at(source, ("providers", p.name, "api_key_env"), message)


def _problem_at(source: Path, path: tuple[str, ...], message: str) -> ConfigProblem:
    """A problem at ``path`` of the YAML, with its line when the file still reads."""
    from router.yamlsrc import format_path, load_yaml

    try:
        return load_yaml(source, str(source)).problem(path, message, at_key=True)
    except ConfigError:  # the file changed or went since it was loaded
        return ConfigProblem(str(source), None, None, format_path(path), message)
