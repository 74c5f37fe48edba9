"""Training state in and out of a loop's checkpoint file (``StateFile``): written atomically,
tensors and plain types only, loaded with ``weights_only=True``, resumed only by the run
that wrote it. Every training loop keeps its state this way: pre-training
(``checkpoints/last.pt``), fine-tuning and segmentation (``checkpoint.pt``), the linear
probe (``grid.pt``). A file is written by the holder of its directory's lock
(``folk.utils.lock``, taken by ``folk pretrain`` and ``folk.evals.runner``), who also sweeps
the temporary files a killed writer left (``folk.utils.io.remove_stale_temps``).

Mismatch policy, the one rule (``refuse_or_discard``): a state file that belongs to another
run (its identity differs from the current run's) or that cannot be read is never resumed.
What happens instead depends only on what the file is, which its owner declares once
(``disposable``):

- the product of training over images (pre-training, fine-tuning, segmentation: every
  step runs a backbone over a batch of images, hours at full size): refused, a RunDirError
  (DamagedFileError when it is unreadable) naming the file and the remedy; throwing it
  away is the user's decision;
- a disposable cache (the linear probe's grid: seconds of training on features cached
  elsewhere, recomputed exactly): a warning naming the file, and training starts afresh,
  overwriting it.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from folk.errors import DamagedFileError, RunDirError
from folk.utils.io import atomic_torch_save, load_torch_file

AFRESH = "starting afresh"


def rng_state() -> dict:
    """Global RNG states of python, numpy and torch (CPU and CUDA) as weights-only types."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state(
        (np_state[0], np_state[1].numpy().astype(np.uint32), np_state[2], np_state[3], np_state[4])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def refuse_or_discard(disposable: bool, problem: str, remedy: str, log: logging.Logger) -> None:
    """The mismatch policy of the module docstring: ``problem`` (what is wrong with which
    file) is a RunDirError ending in ``remedy``, or, for a disposable file, a warning."""
    if not disposable:
        raise RunDirError(f"{problem}; {remedy}")
    log.warning("%s; %s", problem, AFRESH)


def _plain(value: Any) -> Any:
    # what a value reads back as after torch.save/load: tuples come back as lists
    return json.loads(json.dumps(value))


def _same(saved: Any, current: Any) -> bool:
    if isinstance(current, torch.Tensor):
        return isinstance(saved, torch.Tensor) and torch.equal(saved.cpu(), current.cpu())
    try:
        return _plain(saved) == _plain(current)
    except (TypeError, ValueError):
        return False


class StateFile:
    """One loop's resumable state at ``path``.

    ``identity``: the entries (a fingerprint, a format number) a state must hold, equal, to
    be resumed; ``save`` writes them into every state. ``disposable`` decides a mismatch
    (module docstring); ``remedy``: what the user should do with a refused file (not
    needed for a disposable one); ``other`` says whose the file is then ("a different
    fine-tuning configuration"). ``required``: the keys without which a state is damaged."""

    def __init__(
        self,
        path: Path,
        *,
        identity: dict[str, Any],
        disposable: bool,
        other: str,
        log: logging.Logger,
        remedy: str = "",
        required: tuple[str, ...] = (),
    ):
        self.path, self.identity, self.disposable = Path(path), identity, disposable
        self.remedy, self.other, self.log, self.required = remedy, other, log, required

    def load(self) -> dict | None:
        """The saved state, or None when there is none to resume (no file, or a disposable
        one that is unreadable or belongs to another run)."""
        if not self.path.is_file():
            return None
        try:
            state = load_torch_file(
                self.path, AFRESH if self.disposable else self.remedy, self.required
            )
        except DamagedFileError as exc:
            if not self.disposable:
                raise
            self.log.warning("%s", exc)
            return None
        if not isinstance(state, dict) or not all(
            key in state and _same(state[key], value) for key, value in self.identity.items()
        ):
            refuse_or_discard(
                self.disposable, f"{self.path} was written by {self.other}", self.remedy, self.log
            )
            return None
        return state

    def save(self, state: dict) -> None:
        atomic_torch_save({**self.identity, **state}, self.path)


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
