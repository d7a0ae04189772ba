"""What a run must keep besides its model to resume identically: the round checkpoint.

After every round the driver's state — the strategy's :class:`~medfed.strategies.base.
StrategyState` (server optimiser moments, …) and the coordinator's privacy state (the adaptive
clip) — is written next to the round's model: ``checkpoint.safetensors`` in a run folder, a
blob named in the round's record at a coordinator. A restarted run reads it back with
:func:`checkpoint_from_bytes` and hands it to :meth:`RoundDriver.restore
<medfed.orchestration.driver.RoundDriver.restore>`. Safetensors and JSON only; never pickled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from medfed.errors import SerializationError
from medfed.serde import params_from_bytes, params_to_bytes
from medfed.strategies.base import StrategyState

__all__ = ["RoundCheckpoint", "checkpoint_from_bytes", "checkpoint_to_bytes"]

_VERSION = "1"


@dataclass(frozen=True)
class RoundCheckpoint:
    """The state after round ``round``: the strategy's, and the coordinator's privacy state."""

    round: int
    strategy: StrategyState = field(default_factory=StrategyState)
    privacy: dict[str, float] = field(default_factory=dict)


def checkpoint_to_bytes(checkpoint: RoundCheckpoint) -> bytes:
    return params_to_bytes(
        checkpoint.strategy.tensors,
        {
            "medfed.checkpoint": _VERSION,
            "round": str(checkpoint.round),
            "strategy": json.dumps(dict(checkpoint.strategy.values), sort_keys=True),
            "privacy": json.dumps(checkpoint.privacy, sort_keys=True),
        },
    )


def checkpoint_from_bytes(data: bytes, *, expected_sha256: str | None = None) -> RoundCheckpoint:
    """A checkpoint back; anything else (or a damaged one) is a SerializationError."""
    tensors, meta = params_from_bytes(data, expected_sha256=expected_sha256)
    if meta.get("medfed.checkpoint") != _VERSION:
        raise SerializationError(
            f"not a round checkpoint of version {_VERSION} (found "
            f"{meta.get('medfed.checkpoint')!r}); it was written by another medfed version"
        )
    try:
        round_ = int(meta["round"])
        values = json.loads(meta["strategy"])
        privacy = json.loads(meta["privacy"])
    except (KeyError, ValueError):
        raise SerializationError("a round checkpoint's metadata is damaged") from None
    if not isinstance(values, dict) or not all(
        isinstance(v, int | float | str) and not isinstance(v, bool) for v in values.values()
    ):
        raise SerializationError("a checkpoint's strategy values must be numbers or text")
    if not isinstance(privacy, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in privacy.values()
    ):
        raise SerializationError("a checkpoint's privacy state must hold finite numbers")
    return RoundCheckpoint(
        round_, StrategyState(tensors, values), {k: float(v) for k, v in privacy.items()}
    )
