"""Hooks: how a training loop lets tests and observers in at its step boundaries.

Every loop calls its hooks after each optimiser step, once the checkpoint due at that step
(if any) is written, with a ``Boundary`` saying where it stands. A hook observes (progress
reports, tests recording epochs) or raises to end the run there, as a kill would
(``stop_after``): whatever it raises leaves the loop as it is, after the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable


class StopRequested(Exception):
    """The run was asked to stop after checkpointing: by a signal (``signum``), or by a
    hook (``signum`` 0)."""

    def __init__(self, signum: int = 0):
        super().__init__(f"stopped by signal {signum}" if signum else "stopped by a hook")
        self.signum = signum


@dataclass(frozen=True)
class Boundary:
    """Where a loop stands after an optimiser step."""

    step: int  # optimiser steps done since the start of training (a resumed run counts on)
    epoch: int  # the epoch of that step, from 0
    epoch_end: bool  # that step was its epoch's last
    checkpointed: bool  # the checkpoint on disk now holds the state after that step


Hook = Callable[[Boundary], None]


def call_hooks(hooks: Iterable[Hook], boundary: Boundary) -> None:
    for hook in hooks:
        hook(boundary)


def stop_after(steps: int) -> Hook:
    """A hook that stops the run (StopRequested) after ``steps`` optimiser steps of this
    call, as if the process were killed there: what a test of resuming needs."""
    seen = 0

    def hook(boundary: Boundary) -> None:
        nonlocal seen
        seen += 1
        if seen >= steps:
            raise StopRequested(0)

    return hook


def at_epoch_end(observe: Callable[[int], None]) -> Hook:
    """A hook that calls ``observe(epoch)`` at the end of every epoch."""

    def hook(boundary: Boundary) -> None:
        if boundary.epoch_end:
            observe(boundary.epoch)

    return hook
