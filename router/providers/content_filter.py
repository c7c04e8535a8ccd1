"""Azure's content-filter results, read into one line that names what was filtered.

Azure OpenAI annotates prompts and completions with a result per category::

    {"hate": {"filtered": false, "severity": "safe"},
     "jailbreak": {"filtered": true, "detected": true},
     "protected_material_text": {"filtered": false, "detected": false}, ...}

in ``prompt_filter_results[].content_filter_results`` and
``choices[].content_filter_results`` of a reply (and of each stream chunk), and
in ``error.innererror.content_filter_result`` of a 400 whose ``error.code`` is
``content_filter``. Only the categories marked ``filtered: true`` matter: the
others are annotations and are ignored. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def filtered_categories(results: Any) -> list[str]:
    """The categories of one ``content_filter_results`` object that were filtered,
    each with its severity when it has one: ``["hate (severity high)", "jailbreak"]``.
    Anything that is not such an object gives an empty list."""
    if not isinstance(results, dict):
        return []
    out: list[str] = []
    for name, result in results.items():
        if not isinstance(result, dict) or result.get("filtered") is not True:
            continue
        severity = result.get("severity")
        out.append(f"{name} (severity {severity})" if isinstance(severity, str) else str(name))
    return out


def filter_summary(results: Iterable[Any]) -> str | None:
    """``"filtered: hate (severity high), violence (severity medium)"`` for the
    filtered categories of several results objects (each named once), else None."""
    names: list[str] = []
    for r in results:
        names += [n for n in filtered_categories(r) if n not in names]
    return f"filtered: {', '.join(names)}" if names else None


def error_filter_summary(data: Any) -> str | None:
    """The filtered categories of an Azure content-filter error body
    (``error.innererror.content_filter_result``), else None."""
    err = data.get("error") if isinstance(data, dict) else None
    inner = err.get("innererror") if isinstance(err, dict) else None
    if not isinstance(inner, dict):
        return None
    return filter_summary([inner.get("content_filter_result")])
