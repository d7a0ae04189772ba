"""Sites run one after another in this process: the default, and the fastest for small models."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from medfed.orchestration.backends.base import Request, SiteFactory
from medfed.records import Reply
from medfed.site.runtime import SiteRuntime

__all__ = ["InProcessBackend"]


class InProcessBackend:
    """Each site's runtime is built on first use and kept for the whole run."""

    def __init__(self, factory: SiteFactory) -> None:
        self._factory = factory
        self._sites: dict[str, SiteRuntime] = {}

    @property
    def site_names(self) -> list[str]:
        return list(self._factory.site_names)

    def _site(self, name: str) -> SiteRuntime:
        site = self._sites.get(name)
        if site is None:
            site = self._sites[name] = self._factory.make(name)
        return site

    def exchange(
        self, requests: Sequence[Request], *, timeout: float | None = None
    ) -> Iterator[Reply]:
        # a generator: each site runs only when the driver asks for its reply, so one update
        # at a time is alive (memory does not grow with the number of sites)
        for name, instruction in requests:
            yield self._site(name).handle(instruction)

    def close(self) -> None:
        self._sites.clear()
