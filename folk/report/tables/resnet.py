"""ResNet backbones: fine-tuning, linear probe and k-NN top-1 of each method."""

from __future__ import annotations

from folk.eval_tasks import FINETUNE, KNN, LINEAR
from folk.recipes import is_resnet
from folk.report.collect import Run
from folk.report.table import OURS, Column, Table
from folk.report.tables.building import (
    _attach,
    _eval_cell,
    _finalise,
    _find_row,
    _main_grid,
    _place,
    _published,
    _published_row,
    _pub_cell,
    _sort_runs,
)


def resnet_table(runs: list[Run], ref) -> Table:
    res_runs = [r for r in _sort_runs(_main_grid(runs)) if r.is_resnet]
    table = Table(
        name="resnet50",
        title="ResNet backbones: fine-tuning, linear probe and k-NN top-1",
        description="Each ResNet backbone (the paper's ResNet-50; the demo's ResNet-18) "
        "pre-trained with each method: top-1 accuracy (%) "
        "after fine-tuning (`eval/finetune`), of a linear probe (`eval/linear`) "
        "and of a weighted k-NN classifier (`eval/knn`).",
        key_columns=["method", "backbone", "dataset", "pre-train epochs", "fine-tune epochs"],
        columns=[Column(FINETUNE), Column(LINEAR), Column(KNN)],
        empty_note="No ResNet runs yet.",
    )
    for _, p in _published(ref, "finetune", ["top1"], arch=is_resnet).iterrows():
        keys = {
            "method": p["method"],
            "backbone": p["backbone"],
            "dataset": p["pretrain_dataset"],
            "pre-train epochs": p["pretrain_epochs"] or None,
            "fine-tune epochs": p["eval_epochs"] or None,
        }
        _published_row(table.rows, keys, p).cells[FINETUNE] = _pub_cell(p)
    for run in res_runs:
        ft = run.eval("finetune", None)
        keys = {
            "method": run.method,
            "backbone": run.backbone,
            "dataset": run.dataset,
            "pre-train epochs": str(run.epochs),
            "fine-tune epochs": str(ft.record["epochs"])
            if ft and ft.record.get("epochs")
            else None,
        }
        evs = {FINETUNE: ft, LINEAR: run.eval("linear", None), KNN: run.eval("knn", None)}
        row = _attach(_find_row(table.rows, keys, OURS), run, evs.values())
        for col, ev in evs.items():
            _place(table, row, col, _eval_cell(run, ev))
    return _finalise(table)
