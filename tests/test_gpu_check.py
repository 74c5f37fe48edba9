"""scripts/gpu_check.sh --dry-run: the GPU check's plumbing on a CPU, at toy sizes. Every
step leaves one record with a status in the one JSON-lines file, whatever the step did."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

STEPS = [
    "environment",
    "cuda_tests",
    "bench_step",
    "bench_step_compile",
    "bench_data",
    "pretrain_resume",
    "gpu_mini",
]
STATUSES = {"ok", "failed", "timeout", "skipped"}


def test_dry_run_writes_one_record_per_step(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable, TMPDIR=str(tmp_path))
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = (tmp_path / "out" / "gpu_check.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == STEPS
    for r in records:
        assert r["type"] == "gpu_check" and r["status"] in STATUSES and r["dry_run"] is True
        assert isinstance(r["figures"], dict) and r["seconds"] >= 0
        assert r["status"] == "ok" or r.get("reason"), r  # a step that did not run says why
        assert (tmp_path / "out" / "logs" / f"{r['step']}.log").is_file() or r[
            "status"
        ] == "skipped"
        assert f"{r['step']}: " in proc.stdout  # the progress line
    by = {r["step"]: r for r in records}
    if by["bench_data"]["status"] == "ok":
        figures = by["bench_data"]["figures"]
        assert figures["ratio_vs_dino"] > 0 and figures["bound"] in ("loader", "step")
    if by["pretrain_resume"]["status"] == "ok":
        figures = by["pretrain_resume"]["figures"]
        assert figures["first_rc"] == 143 and figures["finished"] is True
    # the bulky work directory is gone; only the figures and the logs stay
    assert not list(tmp_path.glob("folk-gpu-check.*"))
