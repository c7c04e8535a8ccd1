"""Secret redaction: the one place that knows what a secret looks like.

Every key value the router loads is registered here, and every log event and
every error message passes through :func:`redact` before anyone can see it.
Besides the registered values, anything shaped like a credential is scrubbed:
``sk-...`` style keys, ``Bearer <token>``, ``x-api-key: <value>``.

Text from someone else's exception (an HTTP parser quoting the bytes it choked on)
goes through :func:`redact_foreign`, which also drops quoted raw bytes and any
piece of a known secret, since such text may quote a key cut at any point.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"

# Known key values loaded from the environment (filled by the config loader).
_secrets: set[str] = set()
# One compiled alternation of the known values; rebuilt when the set changes.
_secret_re: re.Pattern[str] | None = None
# Every _PIECE-character substring of the known values (for redact_foreign).
_pieces: set[str] = set()

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
    _pieces.update(_pieces_of(value))
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


# Shortest piece of a secret that redact_foreign removes: a parser may quote a key
# cut anywhere, and a run this long of a key's characters is not an accident.
_PIECE = 8
# Runs of the characters keys are made of, as candidates for holding a piece.
_RUN = re.compile(rf"[A-Za-z0-9._~+/=\-]{{{_PIECE},}}")
# A Python bytes literal (b'...' or b"...", maybe in bytearray(...)): how parsers
# quote the raw input they choked on. Unterminated (cut by a length limit) counts too.
_BYTES_LITERAL = re.compile(
    r"""(?<![\w])(?:bytearray\()?b(?:'(?:[^'\\]|\\.)*(?:'|$)|"(?:[^"\\]|\\.)*(?:"|$))\)?""",
    re.DOTALL,
)
RAW_BYTES = "b'...'"
# A URL's query string (it may carry a key, e.g. ``?key=``): replaced by ``?...``.
_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s'\"?]*)\?[^\s'\"]*", re.IGNORECASE)
# Longest foreign text kept, after redaction.
FOREIGN_TEXT_LIMIT = 500


def _pieces_of(value: str) -> set[str]:
    return {value[i : i + _PIECE] for i in range(len(value) - _PIECE + 1)}


def redact_foreign(text: str, extra: Iterable[str] = (), limit: int = FOREIGN_TEXT_LIMIT) -> str:
    """Redact text from a foreign exception or an upstream header, and cap its length.

    Beyond :func:`redact`: the ``extra`` values (e.g. a transport's own header values)
    are removed, quoted raw bytes are replaced by ``b'...'`` and URL query strings by
    ``?...``, every run of key
    characters that holds a piece (8 characters or more) of a known or ``extra``
    secret is replaced, and the result is cut to ``limit`` characters (after
    redaction, so a cut never leaves part of a key).
    """
    extras = [v for v in extra if len(v) >= _MIN_SECRET_LEN]
    for value in extras:
        text = text.replace(value, REDACTED)
    text = _BYTES_LITERAL.sub(RAW_BYTES, text)
    text = _QUERY.sub(r"\1?...", text)
    text = redact(text)
    pieces = _pieces
    if extras:
        pieces = pieces.union(*(_pieces_of(v) for v in extras))
    if pieces:
        text = _RUN.sub(lambda m: REDACTED if _holds_piece(m.group(), pieces) else m.group(), text)
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text


def _holds_piece(run: str, pieces: set[str]) -> bool:
    return any(run[i : i + _PIECE] in pieces for i in range(len(run) - _PIECE + 1))
