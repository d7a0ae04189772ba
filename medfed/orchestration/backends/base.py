"""The one interface between the round driver and the sites, whatever runs them.

A backend receives a batch of ``(site, instruction)`` requests and yields one reply per
request, in the order of the requests (so aggregation order — and every float sum — is the
same whichever site finishes first). A site that cannot be reached, crashes or times out is
a reply carrying a :class:`~medfed.records.SiteFailure`, never an exception.

A round may call :meth:`Backend.exchange` several times (train, then evaluate; the stages of
secure aggregation), so backends keep their sites alive between calls.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from medfed.records import Instruction, Reply
from medfed.site.runtime import SiteRuntime

__all__ = ["Backend", "Request", "SiteFactory"]

Request = tuple[str, Instruction]


class SiteFactory(Protocol):
    """Builds the runtime of a named site where the site runs (picklable for process pools)."""

    @property
    def site_names(self) -> list[str]: ...

    def make(self, name: str) -> SiteRuntime: ...


class Backend(Protocol):
    @property
    def site_names(self) -> list[str]:
        """The sites this backend can reach right now."""
        ...

    def exchange(
        self, requests: Sequence[Request], *, timeout: float | None = None
    ) -> Iterator[Reply]:
        """Send each request to its site; yield the replies in request order."""
        ...

    def close(self) -> None: ...
