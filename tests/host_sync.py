"""Record the operations that would stall a CUDA stream, even when the tensors are on the CPU.

A training step should queue work on the device and never wait for it: every read of a
device value on the host (``.item()``, ``bool(t)``, a data-dependent output shape), every
device-to-host copy and every blocking copy of Python data to the device makes the host wait
for the queue to drain, and the GPU then idles while Python catches up. On the CPU none of
this costs anything, which is why a CPU test has to look at the operations themselves: this
module's :class:`HostSyncCounter` records the ones that would synchronise on CUDA.

It is a ``TorchDispatchMode``: it sees the aten operators below autograd, backward included.
Tensors made from Python or numpy data (``torch.tensor``, ``torch.as_tensor`` of a list,
``torch.from_numpy``, indexing with a list, ``t[i] = 5``) all pass through ``aten.lift_fresh``;
on a GPU they become a blocking copy from pageable host memory.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# operators whose result the host must read (a scalar, or the size of the output)
_READS_DEVICE = {
    aten._local_scalar_dense.default,  # .item(), bool(t), int(t), float(t)
    aten.is_nonzero.default,
    aten.equal.default,
    aten.nonzero.default,
    aten.nonzero.out,
    aten.argwhere.default,
    aten.masked_select.default,
    aten.masked_select.out,
    aten.unique_consecutive.default,
    aten.unique_dim.default,
    aten._unique.default,
    aten._unique2.default,
    aten.unique_dim_consecutive.default,
    aten.bincount.default,
    aten.histc.default,
}

# Python data made into a tensor: a host-to-device copy when created on (or moved to) a GPU
_FROM_HOST_DATA = {aten.lift_fresh.default, aten.lift_fresh_copy.default}


def _device_of(value) -> torch.device | None:
    return value.device if isinstance(value, torch.Tensor) else None


@dataclass
class HostSyncEvent:
    op: str
    why: str
    where: str = field(repr=False)

    def __str__(self) -> str:
        return f"{self.op} ({self.why})\n{self.where}"


def _caller() -> str:
    """The innermost frames of the repository's code and its libraries, without torch's own."""
    frames = [
        f
        for f in traceback.extract_stack()[:-3]
        if "/torch/utils/_python_dispatch" not in f.filename and "host_sync.py" not in f.filename
    ]
    return "".join(traceback.format_list(frames[-6:]))


class _DispatchRecorder(TorchDispatchMode):
    def __init__(self, events: list[HostSyncEvent]):
        super().__init__()
        self.events = events

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        why = self._why(func, args, kwargs)
        if why:
            self.events.append(HostSyncEvent(str(func), why, _caller()))
        return func(*args, **kwargs)

    @staticmethod
    def _why(func, args, kwargs) -> str | None:
        if func in _READS_DEVICE:
            return "the host reads a device value or a data-dependent size"
        if func in _FROM_HOST_DATA:
            return "a tensor made from host data: a blocking copy on a GPU"
        if func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
                return "boolean-mask indexing: a nonzero() inside"
        if func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
            return "repeat_interleave with tensor repeats and no output_size"
        if func is aten._to_copy.default:
            source, target = _device_of(args[0]), kwargs.get("device")
            if target is not None and source is not None and torch.device(target) != source:
                return f"a copy from {source} to {target}"
        if func is aten.copy_.default:
            target, source = _device_of(args[0]), _device_of(args[1])
            if source is not None and target is not None and source != target and args[1].dim() > 0:
                return f"a copy from {source} to {target}"
        return None


class HostSyncCounter:
    """``with HostSyncCounter() as counter: ...``; ``counter.events`` lists what was seen."""

    def __init__(self):
        self.events: list[HostSyncEvent] = []
        self._mode = _DispatchRecorder(self.events)

    def __enter__(self) -> HostSyncCounter:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)

    def report(self) -> str:
        return "\n".join(f"[{i}] {event}" for i, event in enumerate(self.events))
