"""Backends: in-process, process pool (and, later, the network coordinator)."""

from medfed.orchestration.backends.base import Backend, Request, SiteFactory
from medfed.orchestration.backends.inprocess import InProcessBackend
from medfed.orchestration.backends.process_pool import ProcessPoolBackend

__all__ = ["Backend", "InProcessBackend", "ProcessPoolBackend", "Request", "SiteFactory"]
