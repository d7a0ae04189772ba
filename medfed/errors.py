"""Every error medfed raises, and the exit code the CLI turns it into.

::

    MedfedError                      base; every message says what to do next
    ├── UsageError                   the user asked for something impossible (exit 2)
    │   ├── ConfigError              a configuration value is missing or out of range
    │   ├── DataError                an unknown data set, a missing folder, a bad file
    │   └── TaskLoadError            a task module does not import or has no such object
    ├── SerializationError           bytes that are not a valid medfed record (exit 3)
    │   └── IntegrityError           a checksum or format version does not match
    ├── RoundFailed                  too few sites replied for a round to count (exit 4)
    └── RunInterrupted               stopped by Ctrl-C; finished rounds are saved (exit 130)

A site's own failure is not raised at the coordinator: it travels as a value
(:class:`medfed.records.SiteFailure`) inside the site's reply, and the round goes on
without that site.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "IntegrityError",
    "MedfedError",
    "RoundFailed",
    "RunInterrupted",
    "SerializationError",
    "TaskLoadError",
    "UsageError",
]


class MedfedError(Exception):
    """Base of all medfed errors."""

    exit_code: int = 1


class UsageError(MedfedError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration value is missing, of the wrong type, or out of range."""


class DataError(UsageError):
    """A data set is unknown, missing, or does not hold what it should."""


class TaskLoadError(UsageError):
    """A task module could not be imported, or does not define the named task."""


class SerializationError(MedfedError):
    """Bytes that do not decode into a medfed record."""

    exit_code = 3


class IntegrityError(SerializationError):
    """A checksum, size or format version does not match what was promised."""


class RoundFailed(MedfedError):
    """Fewer sites than the minimum replied successfully, so the round cannot count."""

    exit_code = 4


class RunInterrupted(MedfedError):
    """The run was interrupted; what was finished is saved and the run is marked incomplete."""

    exit_code = 130
