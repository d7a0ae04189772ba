"""What a run must keep besides its model to resume identically: the round checkpoint.

After every round the driver's state — the strategy's :class:`~medfed.strategies.base.
StrategyState` (server optimiser moments, …) and the coordinator's privacy state (the adaptive
clip) — is written with the round: ``checkpoint.safetensors`` in a run folder (which holds
the round's global model too, so that one atomic file is all a resumed simulation needs), a
blob named in the round's record at a coordinator (whose database keeps the model). A
restarted run reads it back with :func:`checkpoint_from_bytes` and hands it to
:meth:`RoundDriver.restore <medfed.orchestration.driver.RoundDriver.restore>`. Safetensors and
JSON only; never pickled. Version 1 (no model, strategy tensors unprefixed) is still read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from medfed.errors import SerializationError
from medfed.messages import HarmoniseSettings, harmonise_from_json, harmonise_to_json
from medfed.records import Params
from medfed.serde import params_from_bytes, params_to_bytes
from medfed.strategies.base import StrategyState

__all__ = ["RoundCheckpoint", "checkpoint_from_bytes", "checkpoint_to_bytes"]

_VERSION = "2"
_READ = ("1", "2")


@dataclass(frozen=True)
class RoundCheckpoint:
    """The state after round ``round``: the strategy's, the coordinator's privacy state, the
    harmonisation the sites train with (``[data] harmonise``, learnt before round 1) and, in a
    run folder, the global model after the round."""

    round: int
    strategy: StrategyState = field(default_factory=StrategyState)
    privacy: dict[str, float] = field(default_factory=dict)
    model: Params | None = None
    harmonise: HarmoniseSettings | None = None


def checkpoint_to_bytes(checkpoint: RoundCheckpoint) -> bytes:
    tensors = [(f"strategy/{k}", v) for k, v in checkpoint.strategy.tensors.items()]
    if checkpoint.model is not None:
        tensors += [(f"model/{k}", v) for k, v in checkpoint.model.items()]
    meta = {
        "medfed.checkpoint": _VERSION,
        "round": str(checkpoint.round),
        "strategy": json.dumps(dict(checkpoint.strategy.values), sort_keys=True),
        "privacy": json.dumps(checkpoint.privacy, sort_keys=True),
        "model": "yes" if checkpoint.model is not None else "no",
    }
    if checkpoint.harmonise is not None:  # absent otherwise (and in checkpoints of before)
        meta["harmonise"] = json.dumps(harmonise_to_json(checkpoint.harmonise))
    return params_to_bytes(Params(tensors), meta)


def checkpoint_from_bytes(data: bytes, *, expected_sha256: str | None = None) -> RoundCheckpoint:
    """A checkpoint back; anything else (or a damaged one) is a SerializationError."""
    tensors, meta = params_from_bytes(data, expected_sha256=expected_sha256)
    version = meta.get("medfed.checkpoint")
    if version not in _READ:
        raise SerializationError(
            f"not a round checkpoint of version {' or '.join(_READ)} (found {version!r}); "
            "it was written by another medfed version"
        )
    strategy, model = tensors, None
    if version != "1":
        strategy = Params(
            (k.removeprefix("strategy/"), v)
            for k, v in tensors.items()
            if k.startswith("strategy/")
        )
        if meta.get("model") == "yes":
            model = Params(
                (k.removeprefix("model/"), v) for k, v in tensors.items() if k.startswith("model/")
            )
        if len(strategy) + (0 if model is None else len(model)) != len(tensors):
            raise SerializationError("a round checkpoint holds tensors of no known part")
    try:
        round_ = int(meta["round"])
        values = json.loads(meta["strategy"])
        privacy = json.loads(meta["privacy"])
        given = meta.get("harmonise")
        harmonise = None if given is None else harmonise_from_json(json.loads(given))
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
        round_,
        StrategyState(strategy, values),
        {k: float(v) for k, v in privacy.items()},
        model,
        harmonise,
    )
