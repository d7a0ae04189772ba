"""Client-level DP as update-pipeline steps: clip, then add noise (:mod:`medfed.site.pipeline`).

``delta ─► ClipStep ─► NoiseStep ─► (quantize, mask) ─► out``

Noise comes from a generator seeded from the operating system's entropy (:mod:`secrets`),
never from the instruction's seed: the coordinator chose that seed, and a coordinator who
can replay the noise can subtract it. A generator can be passed in for tests. numpy's
Gaussian sampler is not hardened against floating-point attacks on the noise's low bits
(Mironov 2012); secure aggregation (which hides single updates) is the defence in depth.

The steps keep what they did on the instance (``last_norm``, ``last_clip``, ``last_bit``,
``last_std``), since an :class:`~medfed.records.Update` has no room for it: read them right
after the pipeline ran. One pipeline (and so one set of steps) per site; not thread-safe.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, replace

import numpy as np

from medfed.errors import ConfigError
from medfed.privacy.adaptive_clip import default_count_noise_std, update_noise_multiplier
from medfed.privacy.config import PrivacyConfig
from medfed.privacy.mechanisms import add_gaussian_noise, clip_l2
from medfed.records import Instruction, Update

__all__ = ["ClientDPSteps", "ClipStep", "NoiseStep", "client_dp_steps"]


def os_entropy_rng() -> np.random.Generator:
    """A fresh generator seeded with 128 bits from the OS (unknown to the coordinator)."""
    return np.random.default_rng(secrets.randbits(128))


class ClipStep:
    """Clips the update's delta to an L2 norm (the whole update as one vector).

    With ``adaptive=True`` the bound is the round's ``settings.clip_norm`` from the
    instruction's settings (the server's :class:`~medfed.privacy.adaptive_clip.AdaptiveClip`),
    falling back to ``max_norm``. A :meth:`NoiseStep.relative_to` step then scales its noise
    with the same bound, so a coordinator cannot buy less noise by sending a larger clip.

    After a call: ``last_norm`` is the norm before clipping, ``last_clip`` the bound used,
    ``last_bit`` is 1 when the update was within the bound (not clipped) and 0 otherwise.
    """

    def __init__(self, max_norm: float, *, adaptive: bool = False) -> None:
        if not (math.isfinite(max_norm) and max_norm > 0):
            raise ConfigError(f"the clip norm must be a positive number, got {max_norm}")
        self.max_norm = float(max_norm)
        self.adaptive = adaptive
        self.last_norm: float | None = None
        self.last_clip: float | None = None
        self.last_bit: int | None = None
        self.last_instruction: Instruction | None = None

    def __repr__(self) -> str:
        return f"ClipStep(max_norm={self.max_norm:g}, adaptive={self.adaptive})"

    def bound_for(self, instruction: Instruction) -> float:
        """The L2 bound of this round."""
        if not self.adaptive or instruction.settings.clip_norm is None:
            return self.max_norm
        return instruction.settings.clip_norm  # checked finite and positive by RoundSettings

    def __call__(self, update: Update, instruction: Instruction) -> Update:
        bound = self.bound_for(instruction)
        clipped, norm = clip_l2(update.delta, max_norm=bound)
        self.last_norm, self.last_clip = norm, bound
        self.last_bit = int(norm <= bound)
        self.last_instruction = instruction
        return update if clipped is update.delta else replace(update, delta=clipped)


class NoiseStep:
    """Adds Gaussian noise to every value of the update's delta.

    ``NoiseStep(std)`` adds a fixed std; :meth:`relative_to` adds ``multiplier × bound`` with
    the bound its :class:`ClipStep` used in the same call. ``last_std`` is the std added.
    """

    def __init__(self, std: float, *, rng: np.random.Generator | None = None) -> None:
        if not (math.isfinite(std) and std >= 0):
            raise ConfigError(f"the noise std must be a non-negative number, got {std}")
        self.std = float(std)
        self.multiplier: float | None = None
        self.clip_step: ClipStep | None = None
        self.rng = rng if rng is not None else os_entropy_rng()
        self.last_std: float | None = None

    @classmethod
    def relative_to(
        cls, clip_step: ClipStep, *, multiplier: float, rng: np.random.Generator | None = None
    ) -> NoiseStep:
        """Noise of std ``multiplier × (the clip step's bound)``; place it after ``clip_step``."""
        if not (math.isfinite(multiplier) and multiplier >= 0):
            raise ConfigError(f"the noise multiplier must be non-negative, got {multiplier}")
        step = cls(0.0, rng=rng)
        step.multiplier, step.clip_step = float(multiplier), clip_step
        return step

    def __repr__(self) -> str:
        if self.clip_step is not None:
            return f"NoiseStep(multiplier={self.multiplier:g} × clip)"
        return f"NoiseStep(std={self.std:g})"

    def std_for(self, instruction: Instruction) -> float:
        if self.clip_step is None or self.multiplier is None:
            return self.std
        if self.clip_step.last_instruction is not instruction or self.clip_step.last_clip is None:
            raise RuntimeError(
                "a relative NoiseStep must run after its ClipStep in the same pipeline"
            )
        return self.multiplier * self.clip_step.last_clip

    def __call__(self, update: Update, instruction: Instruction) -> Update:
        std = self.std_for(instruction)
        noised = add_gaussian_noise(update.delta, std=std, rng=self.rng)
        self.last_std = std
        return replace(update, delta=noised)


@dataclass
class ClientDPSteps:
    """The steps of client-level DP at one site, and the noise of its clipped-count bit.

    ``steps`` go into the update pipeline in this order. With adaptive clipping, the site
    sends :meth:`noised_centered_bit` with its update (through secure aggregation when on).
    """

    clip: ClipStep
    noise: NoiseStep
    bit_noise_std: float | None = None

    @property
    def steps(self) -> list[ClipStep | NoiseStep]:
        return [self.clip, self.noise]

    def noised_centered_bit(self) -> float:
        """``last_bit − ½`` plus this site's share of the count noise (see adaptive_clip)."""
        if self.bit_noise_std is None or self.clip.last_bit is None:
            raise RuntimeError("no clipped-count bit: adaptive clipping is off or no update ran")
        return self.clip.last_bit - 0.5 + float(self.noise.rng.normal(0.0, self.bit_noise_std))


def client_dp_steps(
    config: PrivacyConfig,
    *,
    noise_multiplier: float,
    min_sites: int,
    expected_sites: float | None = None,
    rng: np.random.Generator | None = None,
) -> ClientDPSteps:
    """A site's clip and noise steps for ``config`` (``dp="client"``) at the given σ.

    ``min_sites`` is the least number of sites whose noise is in every released sum (the
    secure-aggregation threshold); each site adds ``1/√min_sites`` of the noise. Without
    secure aggregation each site adds the whole noise. With adaptive clipping the update's
    multiplier is raised to keep the total σ (:func:`~medfed.privacy.adaptive_clip.
    update_noise_multiplier`), which needs ``expected_sites`` (sites per round) unless
    ``config.clip_count_stddev`` is set.
    """
    if config.dp != "client":
        raise ConfigError(f"client-level DP steps need privacy.dp = 'client', got {config.dp!r}")
    if min_sites < 1:
        raise ConfigError(f"min_sites must be at least 1, got {min_sites}")
    share = 1 / math.sqrt(min_sites) if config.secure_aggregation else 1.0
    multiplier = noise_multiplier
    bit_std: float | None = None
    if config.adaptive_clip:
        count_std = config.clip_count_stddev
        if count_std is None:
            if expected_sites is None:
                raise ConfigError(
                    "adaptive clipping needs the expected sites per round, or "
                    "privacy.clip_count_stddev"
                )
            count_std = default_count_noise_std(
                expected_sites=expected_sites, noise_multiplier=noise_multiplier
            )
        multiplier = update_noise_multiplier(
            noise_multiplier=noise_multiplier, count_noise_std=count_std
        )
        bit_std = count_std * share
    clip = ClipStep(config.clip_norm, adaptive=config.adaptive_clip)
    noise = NoiseStep.relative_to(clip, multiplier=multiplier * share, rng=rng)
    return ClientDPSteps(clip=clip, noise=noise, bit_noise_std=bit_std)
