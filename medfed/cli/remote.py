"""Shared by the commands that talk to a coordinator: a signed client from a startup kit."""

from __future__ import annotations

from pathlib import Path

from medfed.federation.transfer.client import FederationClient


def client(kit: Path, *, insecure: bool = False) -> FederationClient:
    """A client for ``kit``; a transfer fails after ``MEDFED_STALL_SECONDS`` without progress."""
    import os

    from medfed.errors import ConfigError
    from medfed.federation.identity.kits import load_kit
    from medfed.federation.transfer.client import STALL_SECONDS, client_for_kit

    raw = os.environ.get("MEDFED_STALL_SECONDS", "")
    try:
        stall = float(raw) if raw else STALL_SECONDS
    except ValueError:
        raise ConfigError(f"MEDFED_STALL_SECONDS must be a number, got {raw!r}") from None
    if not stall >= 1:
        raise ConfigError("MEDFED_STALL_SECONDS must be at least 1 second")
    return client_for_kit(load_kit(kit), insecure=insecure, stall_seconds=stall)
