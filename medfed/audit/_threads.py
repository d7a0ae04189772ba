"""Run the audits' small models on one CPU thread.

The audits train and attack models of a few thousand parameters, where torch's thread pool
costs more than it gains: on a busy 2-core machine, two threads made the image attack 2–6×
slower than one (spinning threads wait for each other). The caller's setting is restored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
