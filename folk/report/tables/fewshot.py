"""Few-shot learning: top-1 with a fraction of the labels, with k images per class, and with
a user's list, one column per training set that any run measured (the columns of its
records, folk.metric_columns)."""

from __future__ import annotations

from folk.report.collect import Run
from folk.report.table import OURS, Column, Table
from folk.report.tables.building import (
    _attach,
    task_columns,
    _eval_cell,
    _finalise,
    _find_row,
    _main_grid,
    _sort_runs,
)


def fewshot_table(runs: list[Run], defaults: dict) -> Table:
    main = _sort_runs(_main_grid(runs))
    columns = task_columns(main, "fewshot", defaults)
    table = Table(
        name="fewshot",
        title="Few-shot learning: label fractions and k-shot",
        description="Top-1 accuracy (%) with few labels (`eval/fewshot`): fine-tuning on a "
        'class-balanced fraction of the training labels ("1% labels") and logistic '
        'regression on frozen features with k images per class ("k-shot"); mean ± '
        "standard deviation over seeds where several seeds ran.",
        key_columns=["method", "backbone", "dataset", "pre-train epochs"],
        columns=[Column(c.label) for c in columns],
        empty_note="No few-shot results yet.",
    )
    for run in main:
        evs = [e for e in run.evals if e.task == "fewshot"]
        keys = {
            "method": run.method,
            "backbone": run.backbone,
            "dataset": run.dataset,
            "pre-train epochs": str(run.epochs),
        }
        row = _attach(_find_row(table.rows, keys, OURS), run, evs)
        # the default protocol first, so a variant only fills what it alone measured
        for ev in sorted(evs, key=lambda e: (e.variant != "", e.variant)):
            for col in ev.columns:
                if col.metric not in ev.metrics:  # not finite in every seed merged
                    continue
                std = ev.metric(col.std) if col.std else None
                if row.cells.get(col.label) is None or row.cells[col.label].missing:
                    row.cells[col.label] = _eval_cell(
                        run, ev, value=ev.metric(col.metric), std=std, metric=col.metric
                    )
    return _finalise(table)
