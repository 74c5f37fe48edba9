"""Image classification: fine-tuning top-1 per backbone (the paper's Table 1), and the
frozen features' k-NN and linear-probe top-1 beside the raw-pixel baseline."""

from __future__ import annotations

from folk.eval_tasks import KNN, LINEAR
from folk.recipes import is_resnet
from folk.report.collect import RAW_PIXELS, Run
from folk.report.table import OURS, Column, Table
from folk.report.tables.building import (
    _TASK_COLUMN,
    _attach,
    _backbone_order,
    _eval_cell,
    _finalise,
    _find_row,
    _main_grid,
    _place,
    _protocol_column,
    _published,
    _published_row,
    _pub_cell,
    _sort_runs,
)


def finetune_table(runs: list[Run], ref) -> Table:
    """Fine-tuning top-1 by method (rows) and backbone (columns), as in the paper's Table 1."""
    vit_runs = [r for r in _sort_runs(_main_grid(runs)) if not r.is_resnet]
    pub = _published(ref, "finetune", ["top1"], arch=lambda a: not is_resnet(a))
    backbones = {"ViT-S/16", "ViT-B/16"} | {r.backbone for r in vit_runs} | set(pub["backbone"])
    table = Table(
        name="finetune",
        title="Image classification: fine-tuning top-1 accuracy",
        description="Top-1 accuracy (%) after end-to-end fine-tuning of each pre-trained "
        "backbone (primary metric `top1` of `eval/finetune`), one column per "
        "backbone, one row per method, pre-training dataset and epochs.",
        key_columns=["method", "dataset", "pre-train epochs"],
        columns=[Column(b) for b in sorted(backbones, key=_backbone_order)],
        empty_note="No fine-tuning results yet (no run has eval/finetune/metrics.json).",
    )
    for _, p in pub.iterrows():
        keys = {
            "method": p["method"],
            "dataset": p["pretrain_dataset"],
            "pre-train epochs": p["pretrain_epochs"] or None,
        }
        _published_row(table.rows, keys, p).cells[p["backbone"]] = _pub_cell(p)
    any_variant = False
    for run in vit_runs:
        evs = [e for e in run.evals if e.task == "finetune"] or [None]
        for ev in evs:
            keys = {
                "method": run.method,
                "dataset": run.dataset,
                "pre-train epochs": str(run.epochs),
            }
            if ev is not None and ev.variant:
                keys["eval protocol"], any_variant = ev.variant, True
            row = _attach(_find_row(table.rows, keys, OURS), run, [ev])
            _place(table, row, run.backbone, _eval_cell(run, ev))
    _protocol_column(table, any_variant, after="pre-train epochs")
    return _finalise(table)


def knn_linear_table(runs: list[Run], ref) -> Table:
    table = Table(
        name="knn_linear",
        title="Frozen features: k-NN and linear probe top-1",
        description="Top-1 accuracy (%) of a weighted k-NN classifier (`eval/knn`, primary "
        "`top1_k20`) and of a linear probe (`eval/linear`, `top1`) on the frozen "
        "teacher backbone.",
        key_columns=["method", "backbone", "dataset", "pre-train epochs"],
        columns=[Column(KNN), Column(LINEAR)],
        empty_note="No k-NN or linear-probe results yet.",
    )
    pub = ref[ref["task"].isin(["knn", "linear"])]
    for _, p in pub.iterrows():
        keys = {
            "method": p["method"],
            "backbone": p["backbone"],
            "dataset": p["pretrain_dataset"],
            "pre-train epochs": p["pretrain_epochs"] or None,
        }
        _published_row(table.rows, keys, p).cells[_TASK_COLUMN[p["task"]]] = _pub_cell(p)
    for run in _sort_runs(_main_grid(runs)):
        keys = {
            "method": run.method,
            "backbone": run.backbone,
            "dataset": run.dataset,
            "pre-train epochs": str(run.epochs),
        }
        evs = {KNN: run.eval("knn", None), LINEAR: run.eval("linear", None)}
        row = _attach(_find_row(table.rows, keys, OURS), run, evs.values())
        for col, ev in evs.items():
            _place(table, row, col, _eval_cell(run, ev))
        pixels = run.eval("pixels", None)
        if pixels is not None:  # the same two protocols on the flattened images
            img = run.cfg["model"]["img_size"]
            keys = {
                "method": RAW_PIXELS,
                "backbone": f"none ({img}x{img} px)",
                "dataset": run.dataset,
                "pre-train epochs": None,
            }
            row = _attach(_find_row(table.rows, keys, OURS), run, [pixels])
            for col in pixels.columns:
                _place(
                    table,
                    row,
                    col.label,
                    _eval_cell(run, pixels, value=pixels.metric(col.metric), metric=col.metric),
                )
    return _finalise(table)
