"""Checks the API applies to what a sender declares: reply headers, byte ranges, and the
one-sentence wording of a request that does not fit its schema."""

from __future__ import annotations

import math
import re

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError

from medfed.errors import MedfedError
from medfed.records import Reply

__all__ = ["MALFORMED", "header_problem", "invalid_sentence", "parse_range"]

# what parsing untrusted bytes or JSON may raise: each is the sender's fault, a 400, never a 500
# what a parser may raise on hostile input: 10**400 as a float, JSON nested 200k deep
MALFORMED = (
    MedfedError,
    LookupError,
    TypeError,
    ValueError,
    AttributeError,
    OverflowError,
    RecursionError,
)


def header_problem(reply: Reply) -> str | None:
    """Why a reply's JSON numbers cannot be recorded (JSON parsing lets NaN and Infinity in)."""
    if not math.isfinite(reply.seconds) or reply.seconds < 0:
        return "seconds must be a finite, non-negative number"
    m = reply.metrics
    if m is not None:
        values = [*(getattr(m, name) for name in m.measures()), *m.extra.values()]
        if any(v is not None and not math.isfinite(v) for v in values):
            return "metrics must be finite numbers"
    return None


def invalid_sentence(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "the request is malformed"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"the request is malformed: {where}: {first.get('msg', 'invalid value')}"


def parse_range(header: str | None, size: int) -> tuple[int, int]:
    if not header:
        return 0, size
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", header.strip())
    if not m:
        raise HTTPException(416, "only a single 'bytes=start-end' range is supported")
    start = int(m.group(1))
    stop = int(m.group(2)) + 1 if m.group(2) else size
    if size == 0 and start == 0:  # the first range of an empty blob: nothing, but no error
        return 0, 0
    if start >= size > 0 or stop <= start:
        raise HTTPException(416, f"range outside the blob's {size} bytes")
    return start, min(stop, size)
