"""What every table builder shares: the runs of the main grid, cells read from evaluation
results with their provenance, rows found or made by their key columns, published rows,
and the last pass of every table (published rows first, results not above the random
initialisation marked).

Which runs feed which table is decided from each run's configuration only:
``experiment.ablation`` empty means the main grid of variants; otherwise the run belongs to
that ablation, and the value it varies is read from its config (never from its name).
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

from folk.eval_tasks import ABLATION_TABLES, TASKS, primary_label, tasks_feeding
from folk.metric_columns import MetricColumn, union
from folk.report.collect import RANDOM_INIT, REFERENCE_METHODS, EvalResult, Run
from folk.report.naming import dataset_label, variant_rank
from folk.report.table import BELOW_MARK, PUBLISHED, Cell, Column, Row, Table

# task -> the column of its primary metric, in the tables that show one column per task
_TASK_COLUMN = {t: primary_label(t) for t in tasks_feeding(ABLATION_TABLES)}
ABLATION_COLUMNS = [Column(label) for label in _TASK_COLUMN.values()]


def _main_grid(runs: Iterable[Run]) -> list[Run]:
    return [r for r in runs if not r.ablation]


def _sort_runs(runs: Iterable[Run]) -> list[Run]:
    return sorted(
        runs, key=lambda r: (r.dataset, r.backbone, variant_rank(r.variant), r.epochs, r.rel)
    )


def _eval_cell(
    run: Run,
    ev: EvalResult | None,
    value: float | None = None,
    std: float | None = None,
    metric: str | None = None,
) -> Cell:
    """A cell read from ``ev`` (its primary metric unless ``value`` is given)."""
    if ev is None:
        return Cell()
    if value is None and metric is None:
        value, std = ev.primary()
    elif std is None and metric is not None and "seed_std" in ev.record:
        std = ev.spread(metric)
    task = ev.task + (f"-{ev.variant}" if ev.variant else "")
    detail = f"run {run.rel}, task {task} ({metric or ev.record['primary']}"
    detail += f", {ev.record['epochs']} epochs)" if ev.record.get("epochs") else ")"
    if ev.record.get("seeds"):  # merged over the seeds that have this evaluation
        detail += (
            f", mean ± standard deviation over pre-training seeds "
            f"{', '.join(map(str, ev.record['seeds']))}"
        )
    elif run.seeds:
        detail += f", pre-training seed {ev.record.get('seed')} only"
    if ev.dataset and dataset_label(ev.dataset) not in (run.dataset, run.dataset.split(" (")[0]):
        detail += f", evaluated on {dataset_label(ev.dataset)}"
    return Cell(
        value=value,
        std=std,
        source=ev.rel,
        detail=detail,
        finished_at=str(ev.record.get("finished_at", "")),
    )


def _attach(row: Row, run: Run, evals: Iterable[EvalResult | None] = ()) -> Row:
    notes = [f"{run.experiment}: {n}" for n in run.notes()]
    row.add_run(run.rel, notes, run.git_sha)
    for ev in evals:
        if ev is not None and ev.record.get("git_sha") and ev.record["git_sha"] not in row.git_shas:
            row.git_shas.append(ev.record["git_sha"])
    return row


def _find_row(rows: list[Row], keys: dict, origin: str) -> Row:
    for r in rows:
        if r.origin == origin and r.keys == keys:
            return r
    row = Row(keys=dict(keys), origin=origin)
    rows.append(row)
    return row


def _place(table: Table, row: Row, column: str, cell: Cell) -> None:
    displaced = row.put(column, cell)
    if displaced is not None and displaced.source:
        table.notes.append(
            f"{column} of {row.keys.get('method')}: newer result shown; also "
            f"found {displaced.source}"
        )


def _published(ref, task: str, metrics: Iterable[str] | None = None, arch: Callable | None = None):
    df = ref[ref["task"] == task]
    if metrics is not None:
        df = df[df["metric"].isin(list(metrics))]
    if arch is not None:
        df = df[df["arch"].map(arch)]
    return df


def _published_row(rows: list[Row], keys: dict, ref_row) -> Row:
    row = _find_row(rows, keys, PUBLISHED)
    note = f"{ref_row['source']} ({ref_row['pretrain_dataset']}, {ref_row['eval_detail']}"
    note += f"; {ref_row['note']})" if ref_row["note"] else ")"
    if note not in row.notes:
        row.notes.append(note)
    return row


def _pub_cell(ref_row) -> Cell:
    return Cell(value=float(ref_row["value"]), source="", detail=ref_row["source"])


def _backbone_order(label: str) -> tuple:
    order = "TSBLHg"
    m = re.match(r"ViT-(\w)/(\d+)", label)
    if m:
        return (0, order.index(m.group(1)) if m.group(1) in order else 9, label)
    return (1, 0, label)


def _protocol_column(table: Table, rows_with_variant: bool, after: str) -> None:
    if rows_with_variant:
        table.add_key_column("eval protocol", after=after)


def _mark_below_random_init(table: Table) -> None:
    """Flag every result of a trained backbone that is not above the random initialisation
    of the same backbone on the same data (the ``random init`` row whose other key columns
    are equal), in the same column; the table says so in a note."""
    ignored = ("method", "pre-train epochs")
    inits = [r for r in table.our_rows if r.keys.get("method") == RANDOM_INIT]
    flagged = 0
    for init in inits:
        same = {k: v for k, v in init.keys.items() if k not in ignored}
        for row in table.our_rows:
            if row.keys.get("method") in REFERENCE_METHODS or any(
                row.keys.get(k) != v for k, v in same.items()
            ):
                continue
            for column, cell in row.cells.items():
                ref = init.cells.get(column)
                if (
                    not cell.missing
                    and ref is not None
                    and not ref.missing
                    and cell.value <= ref.value
                ):
                    cell.below_reference = True
                    flagged += 1
    if inits:
        table.notes.append(
            "Reference rows, computed by this pipeline on the same data and split with the same "
            "protocol: 'random init' is the same backbone at its seed's initialisation "
            "(pre-training with 0 epochs; fine-tuned, it is the network trained from scratch "
            "with the same recipe and budget), 'raw pixels' the flattened images, 'majority "
            "class' a constant prediction of the most frequent training class."
        )
    if flagged:
        table.notes.append(
            f"{BELOW_MARK} after a value: {flagged} result(s) of a pre-trained "
            "backbone that do not beat the random initialisation of the same "
            "backbone ('random init' row) in the same column."
        )


def _finalise(table: Table, higher_is_better: bool = True) -> Table:
    """Published rows first (as the paper lists baselines first), each key column filled;
    results not above the random initialisation marked where higher is better."""
    if higher_is_better:
        _mark_below_random_init(table)
    table.rows.sort(key=lambda r: 0 if r.origin == PUBLISHED else 1)
    labels = [r.keys.get("backbone") or "" for r in table.rows] + [c.name for c in table.columns]
    if any("*" in b for b in labels):
        table.notes.append(
            "Backbone* = the architecture with model.depth, embed_dim or "
            "num_heads changed (a reduced model); @Npx = trained at N px."
        )
    for r in table.rows:
        for k in table.key_columns:
            r.keys.setdefault(k, None)
    return table


def task_columns(runs: list[Run], task: str, defaults: dict) -> list[MetricColumn]:
    """The columns of ``task`` that the runs' records state, in order; before any record,
    the layout its configured protocol will write."""
    columns = union(c for run in runs for ev in run.evals if ev.task == task for c in ev.columns)
    return columns or union(TASKS[task].protocol_columns(defaults["eval"]))
