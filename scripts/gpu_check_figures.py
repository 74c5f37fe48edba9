#!/usr/bin/env python3
"""One record of scripts/gpu_check.sh: a step's status and the figures read from what the
step left (its log, the JSON lines of `folk bench`, a run's DONE.json), appended to the
check's JSON-lines file. Only the standard library: it must work whatever the step broke.

A step whose command succeeded but whose figures say it did not do its job (a resumed run
that did not finish, no test collected) is recorded as failed, with the reason.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path


def _jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:  # a torn last line of a killed writer
            continue
    return rows


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def environment(work: Path, log: str) -> tuple[dict, str]:
    m = re.search(r"^ENV (\{.*\})$", log, re.M)
    return (json.loads(m.group(1)) if m else {}), "" if m else "no ENV line in the log"


def cuda_tests(work: Path, log: str) -> tuple[dict, str]:
    counts = {
        k: int(n)
        for n, k in re.findall(
            r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", log
        )
    }
    figures = {
        "passed": counts.get("passed", 0),
        "failed": counts.get("failed", 0),
        "skipped": counts.get("skipped", 0),
        "errors": counts.get("error", 0) + counts.get("errors", 0),
        "failed_tests": re.findall(r"^(?:FAILED|ERROR) (\S+)", log, re.M)[:20],
        "skip_reasons": sorted(set(re.findall(r"^SKIPPED \[\d+\] [^:]+:\d+: (.*)$", log, re.M)))[
            :5
        ],
    }
    collected = figures["passed"] + figures["failed"] + figures["skipped"] + figures["errors"]
    return figures, "" if collected else "no CUDA-marked test ran"


def _bench(path: Path) -> dict:
    out = {}
    for r in _jsonl(path):
        if r.get("type") == "bench":
            out[r["variant"]] = {
                k: r.get(k)
                for k in (
                    "arch",
                    "img_size",
                    "batch_size",
                    "images_per_s",
                    "step_time_ms",
                    "tflops",
                    "mfu",
                    "gflop_per_image",
                    "peak_memory_mb",
                    "filter_fraction",
                    "dtype",
                    "device",
                )
            }
    return out


def bench_step(work: Path, log: str) -> tuple[dict, str]:
    figures = {"variants": _bench(work / "bench_eager.jsonl")}
    v = figures["variants"]
    if "folk" in v and "dino_2view" in v:
        figures["folk_vs_dino_step"] = round(
            v["folk"]["images_per_s"] / v["dino_2view"]["images_per_s"], 3
        )
    return figures, "" if v else "no bench record"


def bench_step_compile(work: Path, log: str) -> tuple[dict, str]:
    figures = {"variants": _bench(work / "bench_compile.jsonl")}
    eager = _bench(work / "bench_eager.jsonl")
    for name, r in figures["variants"].items():
        if name in eager and eager[name]["images_per_s"]:
            r["speedup_vs_eager"] = round(r["images_per_s"] / eager[name]["images_per_s"], 3)
    return figures, "" if figures["variants"] else "no bench record"


def bench_data(work: Path, log: str) -> tuple[dict, str]:
    rows = _jsonl(work / "bench_data.jsonl")
    by = {(r.get("pipeline") or r.get("measure")): r for r in rows}
    if "summary" not in by:
        return {}, "no summary record"
    ours = by.get("pretrain_views", {})
    figures = {
        "loader_per_core": ours.get("per_core"),
        "dino_per_core": ours.get("dino_per_core"),
        "mfm_per_core": ours.get("mfm_per_core"),
        "decode_crop_per_core": ours.get("decode_crop_per_core"),
        "ratio_vs_dino": ours.get("ratio_vs_dino"),
        "time_vs_decode_crop": ours.get("time_vs_decode_crop"),
        "step_images_per_s": by.get("step", {}).get("images_per_s"),
        "whole_images_per_s": by.get("whole", {}).get("images_per_s"),
        "photometric": ours.get("photometric"),
    }
    for key in (
        "bound",
        "loader_images_per_s",
        "cores_to_feed_step",
        "whole_vs_bound",
        "num_workers",
        "cores",
        "arch",
        "batch_size",
        "dataset_images",
    ):
        figures[key] = by["summary"].get(key)
    return figures, ""


def pretrain_resume(work: Path, log: str) -> tuple[dict, str]:
    try:
        figures = json.loads((work / "pretrain_resume.json").read_text())
    except (OSError, ValueError):
        return {}, "the step wrote no pretrain_resume.json"
    try:
        done = json.loads((work / "pretrain" / "DONE.json").read_text())
    except (OSError, ValueError):
        done = None
    figures["finished"] = bool(done) and done.get("iterations") == figures.get("iterations")
    if done:
        figures.update(
            {
                k: done.get(k)
                for k in ("images_per_s", "wall_time_s", "iterations", "peak_memory_mb", "device")
            }
        )
    records = [r for r in _jsonl(work / "pretrain" / "metrics.jsonl") if r.get("type") == "train"]
    steps = [r["iteration"] for r in records]
    # resumed from the checkpoint: no iteration logged twice, none missing between logs
    figures["train_records"] = len(records)
    figures["iterations_logged_once"] = len(steps) == len(set(steps)) and steps == sorted(steps)
    problems = []
    if not figures.get("killed"):
        problems.append("the first run ended before the SIGTERM")
    elif figures.get("first_rc") != 143:
        problems.append(f"the first run exited {figures.get('first_rc')}, not 143 (SIGTERM)")
    if not figures.get("checkpoint_after_kill"):
        problems.append("no checkpoint after the SIGTERM")
    if not figures["finished"]:
        problems.append("the resumed run did not finish")
    if not figures["iterations_logged_once"]:
        problems.append("metrics.jsonl repeats or reorders iterations")
    return figures, "; ".join(problems)


def gpu_mini(work: Path, log: str) -> tuple[dict, str]:
    runs = {}
    for done in sorted((work / "gpu_mini" / "runs").glob("*/*/DONE.json")):
        try:
            d = json.loads(done.read_text())
        except ValueError:
            continue
        runs[done.parent.name] = {
            k: d.get(k) for k in ("images_per_s", "wall_time_s", "iterations")
        }
    jobs = re.search(r"^total\s+(\d+)", log, re.M)
    figures = {"runs": runs, "jobs": int(jobs.group(1)) if jobs else None}
    return figures, ""


STEPS = {
    "environment": environment,
    "cuda_tests": cuda_tests,
    "bench_step": bench_step,
    "bench_step_compile": bench_step_compile,
    "bench_data": bench_data,
    "pretrain_resume": pretrain_resume,
    "gpu_mini": gpu_mini,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--file", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--step", required=True, choices=sorted(STEPS))
    p.add_argument("--status", required=True, choices=["ok", "failed", "timeout", "skipped"])
    p.add_argument("--rc", default="")
    p.add_argument("--ms", type=int, default=0)
    p.add_argument("--log", default="")
    p.add_argument("--reason", default="")
    p.add_argument("--dry-run", default="0")
    a = p.parse_args()
    log = _text(Path(a.log)) if a.log else ""
    figures, problem = ({}, "") if a.status == "skipped" else STEPS[a.step](Path(a.work), log)
    status, reason = a.status, a.reason
    if status == "ok" and problem:
        status, reason = "failed", problem
    elif status != "ok" and not reason:
        reason = problem or ("hit its time limit" if status == "timeout" else f"exited {a.rc}") + (
            f"; last lines: {_tail(log)}" if log else ""
        )
    record = {
        "type": "gpu_check",
        "step": a.step,
        "status": status,
        "rc": int(a.rc) if a.rc.lstrip("-").isdigit() else None,
        "seconds": round(a.ms / 1e3, 1),
        "dry_run": a.dry_run == "1",
        "figures": figures,
        "log": a.log,
        "time": round(time.time(), 1),
    }
    if reason:
        record["reason"] = reason
    with open(a.file, "a") as f:
        f.write(json.dumps(record) + "\n")
    return 0


def _tail(log: str, n: int = 3) -> str:
    lines = [l for l in log.splitlines() if l.strip()]
    return " | ".join(lines[-n:])[-600:]


if __name__ == "__main__":
    raise SystemExit(main())
