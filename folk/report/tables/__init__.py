"""Every report table, built from collected runs and the published reference numbers; one
module per family of tables, on the building blocks of ``building``."""
from __future__ import annotations

from folk.report.collect import Run
from folk.report.seeds import merge_seeds
from folk.report.table import Table
from folk.report.tables.ablations import ablation_tables
from folk.report.tables.classification import finetune_table, knn_linear_table
from folk.report.tables.compute import compute_table
from folk.report.tables.fewshot import fewshot_table
from folk.report.tables.resnet import resnet_table
from folk.report.tables.robustness import robustness_table
from folk.report.tables.segmentation import segmentation_table


def build_tables(runs: list[Run], ref, defaults: dict) -> list[Table]:
    """Result tables over the runs with seed siblings merged (mean ± spread over seeds);
    the compute table lists every run."""
    merged = merge_seeds(runs)
    return [finetune_table(merged, ref), fewshot_table(merged, defaults),
            segmentation_table(merged, ref), resnet_table(merged, ref), *ablation_tables(merged),
            knn_linear_table(merged, ref), robustness_table(merged, defaults),
            compute_table(runs, ref)]
