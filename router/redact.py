"""Secret redaction: the one place that knows what a secret looks like.

Every key value the router loads is registered here, and every log event and
every error message passes through :func:`redact` before anyone can see it.
Besides the registered values, anything shaped like a credential is scrubbed:
``sk-...`` style keys, ``Bearer <token>``, ``x-api-key: <value>``.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

# Known key values loaded from the environment (filled by the config loader).
_secrets: set[str] = set()
# One compiled alternation of the known values; rebuilt when the set changes.
_secret_re: re.Pattern[str] | None = None

# Credential shapes: provider key prefixes, bearer tokens, api-key headers/params.
_SHAPES = re.compile(
    r"(?P<key>\b(?:(?:sk|pk|rk|xai|gsk|sk-ant|sk-or|sk-proj)-|gsk_|hf_|ghp_|gho_|github_pat_|AIza)"
    r"[A-Za-z0-9_\-]{8,})"
    r"|(?P<bearer>\b(?:Bearer|Basic|Token)\s+)[A-Za-z0-9._~+/=\-]{8,}"
    r"|(?P<hdr>\b(?:x-api-key|api[-_]?key|authorization)\b[\"']?\s*[:=]\s*[\"']?)"
    r"[^\s\"',}]{8,}",
    re.IGNORECASE,
)

# Values shorter than this are not registered: redacting "abc" everywhere would
# mangle ordinary text, and a real key is never that short.
_MIN_SECRET_LEN = 8


def register_secret(value: str) -> None:
    """Remember a loaded secret so that it is scrubbed from all output."""
    global _secret_re
    if len(value) < _MIN_SECRET_LEN or value in _secrets:
        return
    _secrets.add(value)
    # Longest first, so a key that contains another is removed whole.
    ordered = sorted(_secrets, key=len, reverse=True)
    _secret_re = re.compile("|".join(re.escape(s) for s in ordered))


def _shape_sub(match: re.Match[str]) -> str:
    if match.group("bearer"):
        return match.group("bearer") + REDACTED
    if match.group("hdr"):
        return match.group("hdr") + REDACTED
    return REDACTED


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and credential shape replaced."""
    if _secret_re is not None:
        text = _secret_re.sub(REDACTED, text)
    return _SHAPES.sub(_shape_sub, text)
