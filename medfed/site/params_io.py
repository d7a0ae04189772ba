"""Params <-> a torch model: the model's ``state_dict`` as numpy arrays and back, exactly.

Names are the ``state_dict`` keys (buffers included); loading checks names, order, shapes and
dtypes, and copies from read-only (memory-mapped) arrays without an extra copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from medfed.records import Params

__all__ = ["load_params", "params_from_model"]


def params_from_model(model: nn.Module) -> Params:
    """The model's ``state_dict`` (parameters and persistent buffers) as fresh numpy arrays."""
    out = []
    for name, tensor in model.state_dict().items():
        if tensor.dtype == torch.bfloat16:
            raise TypeError(
                f"{name!r} is bfloat16, which numpy cannot hold; keep the model in float32 "
                "and use autocast for mixed precision"
            )
        out.append((name, tensor.detach().to("cpu", copy=True).numpy()))
    return Params(out)


def load_params(model: nn.Module, params: Params) -> None:
    """Copy ``params`` into the model in place; names, order, shapes and dtypes must match.

    The arrays may be read-only: they are copied, never shared with the model.
    """
    state = model.state_dict()
    if list(state) != list(params):
        missing = [k for k in state if k not in params]
        unexpected = [k for k in params if k not in state]
        detail = (
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
            if missing or unexpected
            else "the same names in another order"
        )
        raise ValueError(f"the params do not match the model's state_dict: {detail}")
    with torch.no_grad():
        for name, target in state.items():
            array = params[name]
            view = _numpy_view(target)
            if view is not None and view.shape == array.shape and view.dtype == _native(array):
                # one copy, straight from the (possibly memory-mapped, read-only) array
                np.copyto(view, array, casting="equiv")
                continue
            source = torch.from_numpy(array if array.flags.writeable else array.copy())
            if source.shape != target.shape or source.dtype != target.dtype:
                raise ValueError(
                    f"param {name!r} is {array.dtype}{list(array.shape)} but the model holds "
                    f"{str(target.dtype).removeprefix('torch.')}{list(target.shape)}"
                )
            target.copy_(source)


def _numpy_view(tensor: Tensor) -> npt.NDArray[Any] | None:
    """The tensor's memory as a numpy array (CPU tensors of numpy dtypes), else None."""
    if tensor.device.type != "cpu":
        return None
    try:
        return tensor.detach().numpy()
    except (TypeError, RuntimeError):  # e.g. bfloat16 has no numpy dtype
        return None


def _native(array: npt.NDArray[Any]) -> np.dtype[Any]:
    return array.dtype.newbyteorder("=")
