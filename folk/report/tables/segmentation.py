"""Semantic segmentation: mIoU and pixel accuracy of the head trained on each backbone, the
majority-class reference on the same data, and the published mIoU."""

from __future__ import annotations

from folk.eval_tasks import TASKS, primary_label
from folk.report.collect import MAJORITY, EvalResult, Run
from folk.report.naming import dataset_label
from folk.report.table import OURS, Cell, Column, Table
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

HEAD, MAJORITY_GROUP = "head", "majority"  # column groups of folk.metric_columns


def segmentation_table(runs: list[Run], ref) -> Table:
    layout = [c.label for c in TASKS["segmentation"].protocol_columns({}) if c.group == HEAD]
    table = Table(
        name="segmentation",
        title="Semantic segmentation: mIoU",
        description="Single-scale mIoU (%) and pixel accuracy (%) of a segmentation head "
        "trained on the pre-trained backbone (`eval/segmentation`); the eval-data "
        "column names the segmentation dataset, pre-train data the backbone's.",
        key_columns=[
            "method",
            "backbone",
            "pre-train data",
            "eval data",
            "pre-train epochs",
            "head",
        ],
        columns=[Column(label) for label in layout],
        unit="mIoU and pixel accuracy (%)",
        empty_note="No segmentation results yet.",
    )
    for _, p in _published(ref, "segmentation").iterrows():
        keys = {
            "method": p["method"],
            "backbone": p["backbone"],
            "pre-train data": p["pretrain_dataset"],
            "eval data": p["eval_dataset"],
            "pre-train epochs": p["pretrain_epochs"] or None,
            "head": p["eval_detail"],
        }
        _published_row(table.rows, keys, p).cells[primary_label("segmentation")] = _pub_cell(p)
    for run in _sort_runs(_main_grid(runs)):
        evs = [e for e in run.evals if e.task == "segmentation"] or [None]
        seg_cfg = run.cfg["eval"]["segmentation"]
        for ev in evs:
            # the protocol of a run not yet evaluated is unknown (the eval may override it)
            keys = {
                "method": run.method,
                "backbone": run.backbone,
                "pre-train data": run.dataset,
                "eval data": dataset_label(ev.dataset) if ev else None,
                "pre-train epochs": str(run.epochs),
                "head": (ev.variant or seg_cfg["head"]) if ev is not None else None,
            }
            row = _attach(_find_row(table.rows, keys, OURS), run, [ev])
            head = _group(ev, HEAD)
            for label in layout:
                metric = head.get(label)
                _place(
                    table,
                    row,
                    label,
                    _eval_cell(run, ev, value=ev.metric(metric), metric=metric)
                    if metric
                    else Cell(),
                )
            if ev is not None and any(
                ev.metric(m) is not None for m in _group(ev, MAJORITY_GROUP).values()
            ):
                _majority_row(table, run, ev)
    return _finalise(table)


def _group(ev: EvalResult | None, group: str) -> dict[str, str]:
    """label -> metric of the result's columns of ``group`` that it measured."""
    if ev is None:
        return {}
    return {c.label: c.metric for c in ev.columns if c.group == group and c.metric in ev.metrics}


def _majority_row(table: Table, run: Run, ev: EvalResult) -> None:
    """The constant prediction of the most frequent training class, on the same data."""
    keys = {
        "method": MAJORITY,
        "backbone": None,
        "pre-train data": None,
        "eval data": dataset_label(ev.dataset),
        "pre-train epochs": None,
        "head": None,
    }
    row = _attach(_find_row(table.rows, keys, OURS), run, [ev])
    for label, metric in _group(ev, MAJORITY_GROUP).items():
        if ev.metric(metric) is not None:
            _place(table, row, label, _eval_cell(run, ev, value=ev.metric(metric), metric=metric))
