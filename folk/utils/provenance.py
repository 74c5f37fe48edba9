"""What produced a result: git SHA, package versions, device, host."""

from __future__ import annotations

import importlib.metadata as md
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]


def git_sha(repo: Path = _REPO, ignore: tuple[str, ...] = ()) -> tuple[str, bool]:
    """(SHA of HEAD, whether the tracked files other than ``ignore`` (paths relative to the
    repository) have uncommitted changes); ('unknown', False) outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."]
            + [f":(exclude){p}" for p in ignore],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return (sha or "unknown"), bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "timm", "numpy", "folk-repro"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    return out


def device_name() -> str:
    # torch only here: the report and the evaluation records read this module torch-free
    import torch  # noqa: PLC0415

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def provenance() -> dict:
    sha, dirty = git_sha()
    return {
        "git_sha": sha,
        "git_dirty": dirty,
        "versions": versions(),
        "device": device_name(),
        "hostname": socket.gethostname(),
    }
