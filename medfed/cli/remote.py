"""Shared by the commands that talk to a coordinator: a signed client from a startup kit."""

from __future__ import annotations

from pathlib import Path

from medfed.federation.client import FederationClient


def client(kit: Path, *, insecure: bool = False) -> FederationClient:
    from medfed.federation.client import client_for_kit
    from medfed.federation.kits import load_kit

    return client_for_kit(load_kit(kit), insecure=insecure)
