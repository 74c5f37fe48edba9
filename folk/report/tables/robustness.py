"""Robustness: top-1 of the fine-tuned classifier under corruptions and frequency filters,
one column per condition that any run measured (the columns of its records,
folk.metric_columns)."""

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
    _place,
    _sort_runs,
)


def robustness_table(runs: list[Run], defaults: dict) -> Table:
    main = _sort_runs(_main_grid(runs))
    columns = task_columns(main, "robustness", defaults)
    table = Table(
        name="robustness",
        title="Robustness: accuracy under corruptions and frequency filtering",
        description="Top-1 accuracy (%) of the fine-tuned classifier on corrupted test images "
        "(`eval/robustness`): the mean over corruptions and severities "
        "(`mean_corruption_top1`), clean accuracy, each corruption's mean over "
        "severities, and low-/high-pass filtered images per radius (stated at "
        "224 px). Per-severity accuracies are in each metrics.json (source column).",
        key_columns=["method", "backbone", "dataset", "pre-train epochs"],
        columns=[Column(c.label) for c in columns],
        empty_note="No robustness results yet.",
    )
    for run in main:
        evs = [e for e in run.evals if e.task == "robustness"] or [None]
        for ev in evs:
            keys = {
                "method": run.method,
                "backbone": run.backbone,
                "dataset": run.dataset,
                "pre-train epochs": str(run.epochs),
            }
            if ev is not None and ev.variant:
                keys["eval protocol"] = ev.variant
                table.add_key_column("eval protocol", after="pre-train epochs")
            row = _attach(_find_row(table.rows, keys, OURS), run, [ev])
            own = {c.label: c.metric for c in ev.columns} if ev is not None else {}
            for label in (c.label for c in columns):
                metric = own.get(label)
                has = metric is not None and ev.metric(metric) is not None
                _place(
                    table,
                    row,
                    label,
                    _eval_cell(
                        run,
                        ev if has else None,
                        value=ev.metric(metric) if has else None,
                        metric=metric,
                    ),
                )
    return _finalise(table)
