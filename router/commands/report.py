"""What results and errors look like: completions, attempts and errors as text and
as JSON (the shapes are documented in docs/cli.md), and which exit code an error
gets. Money is written by router.money: exact, never in exponent form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from router.errors import (
    BudgetExceededError,
    ConfigError,
    DeadlineExceededError,
    LedgerError,
    ProviderError,
    RequestError,
    StreamInterruptedError,
    TemplateError,
    UnknownRouteError,
)
from router.money import dollars, usd
from router.redact import redact
from router.types import Attempt, Completion, Usage
from router.validate import problem_dict

from .common import CommandError, Exit, Output, WouldOverwriteError, dumps

__all__ = [
    "completion_dict",
    "exit_code",
    "report_error",
    "summary",
    "trail",
]


def usage_dict(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cached_input_tokens": u.cached_input_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "estimated": u.estimated,
        "server_tool_calls": dict(u.server_tool_calls),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def attempt_dict(a: Attempt) -> dict[str, Any]:
    return {
        "provider": a.provider,
        "model": a.model,
        "outcome": a.outcome,
        "status": a.status,
        "error_type": type(a.error).__name__ if a.error is not None else None,
        "error": str(a.error) if a.error is not None else None,
        "reason": a.reason,
        "skip": a.skip.value if a.skip is not None else None,
        "start_ms": _ms(a.start_s),
        "latency_ms": _ms(a.latency_s),
        "ttft_ms": _ms(a.ttft_s),
        "usage": usage_dict(a.usage) if a.usage is not None else None,
        "cost_usd": usd(a.cost_usd),
    }


def output_json(value: Any) -> Any:
    """A completion's checked output as JSON data (a pydantic model is dumped)."""
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def completion_dict(c: Completion) -> dict[str, Any]:
    """A completion as JSON (``complete --json``; ``stream --json``'s ``done`` event)."""
    return {
        "text": c.text,
        "output": output_json(c.output),
        "tool_calls": [
            {"id": t.id, "name": t.name, "arguments": t.arguments} for t in c.tool_calls
        ],
        "route": c.route,
        "provider": c.provider,
        "model": c.model,
        "usage": usage_dict(c.usage),
        "cost_usd": usd(c.cost_usd),
        "finish_reason": c.finish_reason,
        "citations": [
            {"url": x.url, "title": x.title, "start": x.start, "end": x.end} for x in c.citations
        ],
        "response_id": c.response_id,
        "latency_ms": _ms(c.latency_s),
        "attempts": [attempt_dict(a) for a in c.attempts],
    }


def trail(attempts: Sequence[Attempt], verbose: bool = False) -> str:
    """The attempt trail as text: one line per attempt (``verbose``: when it started,
    time to first token, tokens)."""
    lines = []
    for i, a in enumerate(attempts, 1):
        what = a.reason or ""
        if isinstance(a.error, ProviderError):
            what = f"{a.error.kind}: {a.error.detail}"
        elif a.error is not None:
            what = str(a.error)
        status = a.status if a.status is not None else "-"
        step = f"{a.provider}/{a.model}"
        line = f"  {i}. {step:<32} {a.outcome:<7} status={status:<4}"
        line += f" {a.latency_s * 1000:8.1f} ms"
        if verbose:
            line += f"  at +{a.start_s * 1000:.1f} ms"
            if a.ttft_s is not None:
                line += f", first token {a.ttft_s * 1000:.1f} ms"
            if a.usage is not None:
                line += f", {a.usage.input_tokens} in / {a.usage.output_tokens} out"
        if a.outcome == "ok":
            line += f"  {dollars(a.cost_usd)}"
        lines.append(line + (f"  {what}" if what else ""))
    return "".join(line + "\n" for line in lines)


def summary(c: Completion) -> str:
    """Who answered, how fast, tokens and the exact cost, on one line."""
    est = " (estimated)" if c.usage.estimated else ""
    return (
        f"answered by {c.provider}/{c.model} in {c.latency_s * 1000:.1f} ms: "
        f"{c.usage.input_tokens} in / {c.usage.output_tokens} out tokens{est}, "
        f"cost {dollars(c.cost_usd)}"
    )


def exit_code(exc: BaseException) -> Exit:
    """The exit code an error ends the command with."""
    if isinstance(exc, CommandError):
        return exc.code
    if isinstance(exc, ConfigError | LedgerError):
        return Exit.CONFIG
    if isinstance(exc, TemplateError | UnknownRouteError | RequestError):
        return Exit.REQUEST
    return Exit.FAILED


def error_dict(exc: BaseException, code: Exit) -> dict[str, Any]:
    """``{"error": {...}}``: ``type``, ``exit_code`` and ``message`` always; the rest by type."""
    # The class's name, or its nearest public base's (a private subclass is a detail).
    name = next(c.__name__ for c in type(exc).__mro__ if not c.__name__.startswith("_"))
    err: dict[str, Any] = {
        "type": name,
        "exit_code": int(code),
        "message": redact(str(exc)),
    }
    if isinstance(exc, ConfigError):
        err["problems"] = [problem_dict(p) for p in exc.problems]
    if isinstance(exc, TemplateError):
        err["route"] = exc.route
        err["template"] = exc.template
        err["variables"] = list(exc.variables)
    if isinstance(exc, UnknownRouteError):
        err["route"] = exc.route
    if isinstance(exc, RequestError):
        err["route"] = exc.route
        err["index"] = exc.index
        err["provider"] = exc.provider
    if isinstance(exc, LedgerError):
        err["path"] = exc.path
    if isinstance(exc, WouldOverwriteError):
        err["paths"] = exc.paths
    if isinstance(exc, BudgetExceededError):
        err["budget"] = exc.budget
        err["limit_usd"] = usd(exc.limit_usd)
        err["spent_usd"] = usd(exc.spent_usd)
        err["reserved_usd"] = usd(exc.reserved_usd)
    if isinstance(exc, DeadlineExceededError):
        err["route"] = exc.route
        err["deadline_s"] = exc.deadline_s
    if isinstance(exc, ProviderError):
        err["provider"] = exc.provider
        err["model"] = exc.model
        err["status"] = exc.status
    if isinstance(exc, StreamInterruptedError):
        err["partial_chars"] = len(exc.partial_text)
    route = getattr(exc, "route", None)
    if isinstance(route, str) and route:
        err.setdefault("route", route)
    attempts = getattr(exc, "attempts", None)
    if attempts:
        err["attempts"] = [attempt_dict(a) for a in attempts]
    return {"error": err}


def report_error(exc: BaseException, output: Output, *, verbose: bool = False) -> Exit:
    """Write ``exc`` to stderr (as text, or one JSON line) and return its exit code."""
    code = exit_code(exc)
    if output.json:
        output.err.write(dumps(error_dict(exc, code)) + "\n")
        return code
    output.err.write(f"error: {redact(str(exc))}\n")
    attempts = getattr(exc, "attempts", None)
    if attempts:
        output.err.write("attempts:\n" + trail(attempts, verbose))
    return code
