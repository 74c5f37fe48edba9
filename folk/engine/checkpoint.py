"""Training state in and out of ``checkpoints/last.pt``: atomic, tensors and plain types only,
loaded with ``weights_only=True``."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from folk.utils.io import atomic_torch_save


def rng_state() -> dict:
    """Global RNG states of python, numpy and torch (CPU and CUDA) as weights-only types."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), np_state[2],
                         np_state[3], np_state[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_torch_save(state, path)


CHECKPOINT_KEYS = ("iteration", "student", "teacher", "optimizer", "scaler", "objective",
                   "filter_generator", "rng", "sampler", "skipped_images", "elapsed_s")


def checkpoint_remedy(path: Path) -> str:
    return (f"move {path} away (or delete it) and run the same command again to start the "
            f"run over from iteration 0")


def load_checkpoint(path: Path) -> dict:
    """The training state of ``path``; DamagedFileError (naming it) when it is truncated,
    foreign or lacks a key of CHECKPOINT_KEYS."""
    from folk.utils.io import load_torch_file

    return load_torch_file(path, checkpoint_remedy(path), CHECKPOINT_KEYS)


def first_non_finite(state, prefix: str = "") -> str | None:
    """Dotted name of the first floating-point tensor of a nested state (dicts, lists) that
    holds inf or nan, or None. One host sync per device, not one per tensor."""
    named: list[tuple[str, torch.Tensor]] = []

    def walk(node, name: str) -> None:
        if isinstance(node, torch.Tensor):
            if node.is_floating_point() or node.is_complex():
                named.append((name, node))
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{name}.{key}" if name else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{name}.{i}" if name else str(i))

    walk(state, prefix)
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(named):
        by_device.setdefault(t.device, []).append(i)
    bad: list[int] = []
    for positions in by_device.values():
        flags = torch.stack([torch.isfinite(named[i][1]).all() for i in positions]).cpu()
        bad += [i for i, ok in zip(positions, flags.tolist()) if not ok]
    return named[min(bad)][0] if bad else None
