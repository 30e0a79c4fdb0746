"""Strict parsing of request text: run ids, seqs, limits and cursors.

Strategy and invariants
- Request text is parsed before any store is touched, and only into ``uuid.UUID`` and
  ``int`` values: nothing from a request ever reaches the store (or a file path) as text.
- Parsing is strict on purpose: a run id must be the canonical 36-character UUID form, and a
  number must be plain ASCII digits (``int()`` would also take ``" 7"``, ``"+7"``, ``"1_0"``
  and 4000-digit strings). Anything else is a 400 whose message says what was expected.
- A bad value raises ``ApiError`` 400 (``_errors``), rendered as JSON.
"""

from __future__ import annotations

import re
import uuid

from ._errors import ApiError

__all__ = ["MAX_LIMIT", "bad_request", "parse_limit", "parse_run_id", "parse_seq"]

#: The largest ``limit`` a page request may ask for.
MAX_LIMIT = 1000

_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_DIGITS = re.compile(r"[0-9]{1,18}")  # at most 18 digits: always below 2**63


def bad_request(detail: str) -> ApiError:
    """A 400 ``bad_request`` error."""
    return ApiError(400, "bad_request", detail)


def parse_run_id(text: str) -> uuid.UUID:
    """The run id in ``text`` (canonical UUID form only); ``ApiError`` 400 otherwise."""
    if not _CANONICAL_UUID.fullmatch(text):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise bad_request(
            f"{shown!r} is not a run id; a run id is a UUID in its canonical form, "
            "such as 0190f5e4-8a7b-7c3d-9e2f-123456789abc"
        )
    return uuid.UUID(text)


def parse_seq(text: str | None, name: str) -> int | None:
    """A seq (a whole number >= 0) from a query parameter or header, or None if absent."""
    if text is None:
        return None
    if not _DIGITS.fullmatch(text):
        shown = text if len(text) <= 30 else text[:27] + "..."
        raise bad_request(f"{name} must be a seq, a whole number >= 0; got {shown!r}")
    return int(text)


def parse_limit(text: str | None, default: int) -> int:
    """A page size between 1 and ``MAX_LIMIT`` from a query parameter (``default`` if absent)."""
    if text is None:
        return default
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT:
        shown = text if len(text) <= 30 else text[:27] + "..."
        raise bad_request(f"limit must be a whole number from 1 to {MAX_LIMIT}; got {shown!r}")
    return int(text)
