"""Every report table, built from collected runs and the published reference numbers; one
module per family of tables, on the building blocks of ``building``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from folk.report.collect import Run
from folk.report.protocol import add_protocols
from folk.report.seeds import merge_seeds
from folk.report.table import Table
from folk.report.tables.ablations import ablation_tables
from folk.report.tables.classification import finetune_table, knn_linear_table
from folk.report.tables.compute import compute_table
from folk.report.tables.fewshot import fewshot_table
from folk.report.tables.resnet import resnet_table
from folk.report.tables.robustness import robustness_table
from folk.report.tables.segmentation import segmentation_table


@dataclass(frozen=True)
class TableInputs:
    """What a table is built from: every collected run, the runs with seed siblings merged
    (mean ± spread over seeds), the published reference numbers, the configuration
    defaults (protocol settings of tables with no run yet)."""

    runs: list[Run]
    merged: list[Run]
    reference: Any
    defaults: dict


# the report's tables in order, one builder each (a Table or a list of them); adding a
# table is a module in this package plus one row here (docs/extending.md, "How to add a table")
TABLES: list[Callable[[TableInputs], Table | list[Table]]] = [
    lambda t: finetune_table(t.merged, t.reference),
    lambda t: fewshot_table(t.merged, t.defaults),
    lambda t: segmentation_table(t.merged, t.reference),
    lambda t: resnet_table(t.merged, t.reference),
    lambda t: ablation_tables(t.merged),
    lambda t: knn_linear_table(t.merged, t.reference),
    lambda t: robustness_table(t.merged, t.defaults),
    lambda t: compute_table(t.runs, t.reference),  # every run: the compute spent on each
]


def build_tables(runs: list[Run], ref, defaults: dict) -> list[Table]:
    """Every table of :data:`TABLES`, in order."""
    inputs = TableInputs(runs, merge_seeds(runs), ref, defaults)
    tables: list[Table] = []
    for build in TABLES:
        made = build(inputs)
        tables.extend(made if isinstance(made, list) else [made])
    # rows cite merged runs ("folk;folk-seed1") or single ones (the compute table)
    add_protocols(tables, inputs.merged + runs, defaults)
    return tables
