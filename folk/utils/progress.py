"""Progress of the long loops (pre-training, feature extraction, fine-tuning, segmentation):
a live bar on a terminal; elsewhere (the workflow's logs, SLURM's output files) one INFO
record every ``LINE_INTERVAL_S`` seconds and one at the end, lines like the command's other
messages, never a carriage return. Progress is INFO: under ``--quiet`` neither is shown."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Iterable, Iterator

from tqdm import tqdm

LINE_INTERVAL_S = 15.0

log = logging.getLogger(__name__)


def progress(
    iterable: Iterable | None = None,
    *,
    desc: str,
    total: int | None = None,
    initial: int = 0,
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
):
    """An object with tqdm's ``update``, ``set_postfix``, ``close`` and iteration, as the
    stream allows (``enabled=False``: silent, for the other ranks of a distributed run)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    enabled = enabled and log.isEnabledFor(logging.INFO)
    if enabled and sys.stderr.isatty():
        return tqdm(
            iterable,
            desc=desc,
            total=total,
            initial=initial,
            unit=unit,
            leave=leave,
            dynamic_ncols=True,
            mininterval=1.0,
            file=sys.stderr,
        )
    return LineProgress(
        iterable, desc=desc, total=total, initial=initial, unit=unit, enabled=enabled
    )


class LineProgress:
    """tqdm's interface, logged as whole lines: ``desc: n/total unit, rate, postfix``."""

    def __init__(
        self,
        iterable: Iterable | None,
        *,
        desc: str,
        total: int | None,
        initial: int,
        unit: str,
        enabled: bool,
    ):
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.n = self.start_n = initial
        self.enabled = enabled
        self.postfix = ""
        self.started = self.last = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= LINE_INTERVAL_S:
            self.last = now
            self._write()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(done=True)

    def _write(self, done: bool = False) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        parts = [
            f"{self.desc}: {count} {self.unit}",
            f"{rate:.2f} {self.unit}/s",
            f"{elapsed:.0f} s" + (" (done)" if done else ""),
        ]
        if self.postfix:
            parts.append(self.postfix)
        log.info("%s", ", ".join(parts))
