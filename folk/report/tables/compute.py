"""Compute: throughput, time and memory of each pre-training run (its DONE.json) and the
wall time of its evaluations, beside the published figures."""

from __future__ import annotations

from folk.report.collect import Run
from folk.report.naming import fmt_number, variant_rank
from folk.report.table import OURS, Cell, Column, Table
from folk.report.tables.building import _attach, _finalise, _find_row, _published_row


IMG_S, WALL_H, GPU_H, CPU_H, MEM = (
    "images/s",
    "wall time (h)",
    "GPU-hours",
    "CPU-hours",
    "peak memory (MB)",
)
EVAL_H = "eval time (h)"


def _is_cpu(device: str) -> bool:
    return str(device).lower().startswith("cpu")


def compute_table(runs: list[Run], ref) -> Table:
    table = Table(
        name="compute",
        title="Compute: throughput, time and memory of each pre-training run",
        description="Per pre-training run (from its DONE.json): median training images/s, "
        "wall time, device-hours = wall time × world size (GPU-hours on GPUs, "
        "CPU-hours = process-hours on CPUs), peak device memory; and the summed "
        "wall time of its evaluations (metrics.json wall_time_s).",
        key_columns=[
            "experiment",
            "run",
            "method",
            "backbone",
            "dataset",
            "pre-train epochs",
            "device",
            "devices",
        ],
        columns=[
            Column(IMG_S, 0),
            Column(WALL_H, "auto"),
            Column(GPU_H, "auto"),
            Column(CPU_H, "auto"),
            Column(MEM, 0),
            Column(EVAL_H, "auto"),
        ],
        unit="as named in each column header",
        empty_note="No pre-training runs yet.",
    )
    pub = ref[ref["task"] == "compute"]
    for (method, backbone, epochs), grp in pub.groupby(
        ["method", "backbone", "pretrain_epochs"], sort=False
    ):
        vals = {r["metric"]: float(r["value"]) for _, r in grp.iterrows()}
        first = grp.iloc[0]
        keys = {
            "experiment": None,
            "run": None,
            "method": method,
            "backbone": backbone,
            "dataset": first["pretrain_dataset"],
            "pre-train epochs": epochs or None,
            "device": "GPU (unspecified)",
            "devices": fmt_number(vals["devices"]) if "devices" in vals else None,
        }
        row = _published_row(table.rows, keys, first)
        if "wall_time_h" in vals:
            row.cells[WALL_H] = Cell(value=vals["wall_time_h"], detail=first["source"])
            if "devices" in vals:
                row.cells[GPU_H] = Cell(
                    value=vals["wall_time_h"] * vals["devices"], detail=first["source"]
                )
    for run in sorted(
        runs, key=lambda r: (r.experiment, r.ablation, variant_rank(r.variant), r.rel)
    ):
        done = run.done or {}
        keys = {
            "experiment": run.experiment,
            "run": run.name,
            "method": run.method,
            "backbone": run.backbone,
            "dataset": run.dataset,
            "pre-train epochs": str(run.epochs),
            "device": done.get("device") or None,
            "devices": str(done["world_size"]) if done.get("world_size") else None,
        }
        row = _attach(_find_row(table.rows, keys, OURS), run)
        if not run.done:
            row.notes.append(f"{run.rel}: no DONE.json (run not finished)")
        source = f"{run.rel}/DONE.json"
        detail = f"run {run.rel}, DONE.json"

        def cell(value) -> Cell:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            return Cell(value=float(value), source=source, detail=detail) if ok else Cell()

        wall = done.get("wall_time_s")
        row.cells[IMG_S] = cell(done.get("images_per_s"))
        row.cells[WALL_H] = cell(wall / 3600 if isinstance(wall, (int, float)) else None)
        world = done.get("world_size")
        if isinstance(wall, (int, float)) and isinstance(world, int):
            hours = cell(wall * world / 3600)
            row.cells[CPU_H if _is_cpu(done.get("device", "")) else GPU_H] = hours
        row.cells[MEM] = cell(done.get("peak_memory_mb"))
        eval_s = [e.record.get("wall_time_s") for e in run.evals]
        eval_s = [s for s in eval_s if isinstance(s, (int, float))]
        if eval_s:
            row.cells[EVAL_H] = Cell(
                value=sum(eval_s) / 3600,
                source=";".join(e.rel for e in run.evals),
                detail=f"run {run.rel}, sum over {len(eval_s)} evaluation(s)",
            )
    return _finalise(table, higher_is_better=False)
