"""The files behind every cell, kept with the results: each run's resolved ``config.yaml``
and, per evaluation, its ``metrics.json`` and ``log.txt``, copied to
``<out>/runs/<run dir>/`` (the run directories themselves are not kept in git). The
Markdown tables link each row's method to its run's config and each value to the log of
the evaluation that produced it (folk.report.writers)."""

from __future__ import annotations

import shutil
from pathlib import Path

from folk.report.collect import Run

SOURCES_DIR = "runs"
EVAL_FILES = ("metrics.json", "log.txt")


def copy_sources(runs: list[Run], out_dir: Path) -> list[Path]:
    """Replace ``<out>/runs/`` by the sources of ``runs``: a run no longer reported leaves
    nothing behind."""
    dest_root = out_dir / SOURCES_DIR
    if dest_root.is_dir():
        shutil.rmtree(dest_root)
    files = []
    for run in runs:
        dest = dest_root / run.rel
        pairs = [(run.dir / "config.yaml", dest / "config.yaml")]
        for ev in run.evals:
            for name in EVAL_FILES:
                src = ev.path.parent / name
                pairs.append((src, dest_root / Path(ev.rel).parent / name))
        for src, dst in pairs:
            if src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                files.append(dst)
    return files


def config_link(rel: str, copied: set[str]) -> str | None:
    """From a file of ``<out>/tables/``: the copied config of the run directory ``rel``."""
    target = f"{SOURCES_DIR}/{rel}/config.yaml"
    return f"../{target}" if target in copied else None


def log_link(source: str, copied: set[str]) -> str | None:
    """From a file of ``<out>/tables/``: the copied log beside the first metrics.json of a
    cell's ``source`` (relative to the runs directory; several are ``;``-joined), else that
    metrics.json; None when neither was copied (a DONE.json source, an evaluation without a
    log)."""
    parent = Path(source.split(";")[0]).parent.as_posix()
    for name in ("log.txt", "metrics.json"):
        target = f"{SOURCES_DIR}/{parent}/{name}"
        if target in copied:
            return f"../{target}"
    return None
