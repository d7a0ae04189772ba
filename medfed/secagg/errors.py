"""The errors of secure aggregation (all are :class:`medfed.errors.MedfedError`)::

    SecAggError              base of the errors below
    ├── SecAggAborted        too few sites remain; the round fails closed (a RoundFailed)
    ├── ProtocolViolation    a message broke the protocol (wrong stage, size, signature, list, …)
    └── EncodingError        a site's input cannot be encoded (outside the clip, wrong length, NaN)

A configuration that cannot work (for example one whose modulus would overflow) is refused
with :class:`medfed.errors.ConfigError` when the :class:`~medfed.secagg.SecAggConfig` is built.
"""

from __future__ import annotations

from medfed.errors import MedfedError, RoundFailed

__all__ = ["EncodingError", "ProtocolViolation", "SecAggAborted", "SecAggError"]


class SecAggError(MedfedError):
    """Base of the secure-aggregation errors."""


class SecAggAborted(SecAggError, RoundFailed):
    """Fewer sites than the threshold remain (or a secret could not be rebuilt): the round
    ends without a result, and nothing about any single site's input is revealed."""


class ProtocolViolation(SecAggError):
    """A message that the protocol does not allow at this point: unknown or duplicate sender,
    wrong stage, wrong sizes, a bad signature, or lists that contradict what was seen."""


class EncodingError(SecAggError):
    """A site's vector or weight does not fit the fixed-point encoding of the configuration."""
