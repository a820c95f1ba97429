"""Comma-separated notebook parameters (``"z2,p4,p4m"``, ``"1.0,0.1"``), parsed alike by every
experiment: one ValueError that names the parameter when an entry is missing or bad."""

from __future__ import annotations


def split_list(text: str, what: str) -> list[str]:
    """The non-empty, stripped entries of ``text``; ValueError when there are none."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError(f"{what} is empty")
    return items


def number_list(text: str, what: str, kind: type) -> list:
    """The entries of ``text`` converted with ``kind`` (``int`` or ``float``)."""
    try:
        return [kind(s) for s in split_list(text, what)]
    except ValueError:
        raise ValueError(f"{what}: expected comma-separated {kind.__name__}s, got {text!r}") \
            from None
