"""The evaluation tasks: one row each, read by everything that lists them.

A row names the task (``folk eval <name>``; it runs ``folk.evals.<name>.run(cfg, run_dir,
out_dir, log) -> dict``, see folk.evals.runner), its primary metric, what the workflow
prepares for it, the ``eval.*`` sections it reads, the report tables it feeds and the
report columns of its metrics (folk.metric_columns). The configuration's choices
(workflow.evals, seed_evals, ablation_evals), ``folk eval``'s choices, the workflow's
rules and the report all read this table; adding an evaluation is one module in
folk/evals/ and one row here.

Torch-free, and outside folk/evals/: folk.config reads it, and the pre-training engine,
which reads folk.config, loads nothing of the evaluations (tests/test_layers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from folk.metric_columns import (
    MetricColumn,
    fewshot_columns,
    fewshot_protocol_columns,
    pixels_columns,
    primary_column,
    robustness_columns,
    robustness_protocol_columns,
    segmentation_columns,
    segmentation_protocol_columns,
)

# what the workflow provides to an evaluation besides the run's DONE.json and backbone.pt
INPUTS = {
    "data": "the prepared classification dataset (folk prepare data)",
    "fewshot_lists": "the few-shot training lists (folk prepare fewshot)",
    "segmentation": "the prepared segmentation dataset (folk prepare segmentation)",
    "finetune": "the run's fine-tuned classifier (folk eval finetune)",
}
ABLATION_TABLES = "ablations"  # every ablation_<name> table

KNN, LINEAR, FINETUNE = "k-NN top-1", "linear top-1", "fine-tune top-1"


@dataclass(frozen=True)
class EvalTask:
    name: str
    primary: str  # its primary metric (the record's 'primary' names it)
    inputs: tuple[str, ...]  # keys of INPUTS
    reads: tuple[str, ...]  # eval.* keys and sections: a change reruns it
    tables: tuple[str, ...]  # report tables it feeds (ABLATION_TABLES: all ablations)
    # (metrics, primary) -> the report columns of a record's metrics
    columns: Callable[[Mapping[str, float], str], list[MetricColumn]]
    # eval config -> the columns its protocol writes (a table's layout before any result)
    protocol_columns: Callable[[dict], list[MetricColumn]] | None = None

    @property
    def module(self) -> str:
        return f"folk.evals.{self.name}"


_FEATURES = ("batch_size", "feature_source")
_SUBSETS = ("train_subset", "test_subset")  # the labelled images (folk.config.evaluated_subset)

TASKS: dict[str, EvalTask] = {
    t.name: t
    for t in (
        EvalTask(
            "knn",
            "top1_k20",
            ("data",),
            (*_SUBSETS, *_FEATURES, "knn"),
            ("knn_linear", "resnet50", ABLATION_TABLES),
            primary_column(KNN),
        ),
        EvalTask(
            "linear",
            "top1",
            ("data",),
            (*_SUBSETS, *_FEATURES, "linear"),
            ("knn_linear", "resnet50", ABLATION_TABLES),
            primary_column(LINEAR),
        ),
        EvalTask(
            "finetune",
            "top1",
            ("data",),
            (*_SUBSETS, *_FEATURES, "finetune"),
            ("finetune", "resnet50", ABLATION_TABLES),
            primary_column(FINETUNE),
        ),
        EvalTask(
            "fewshot",
            "shot<smallest k>_top1_mean",
            ("data", "fewshot_lists"),
            # its training images are the lists' (the whole split's); its test images the others'
            ("test_subset", *_FEATURES, "fewshot", "finetune"),
            ("fewshot",),
            fewshot_columns,
            fewshot_protocol_columns,
        ),
        EvalTask(
            "segmentation",
            "miou",
            ("data", "segmentation"),
            (*_FEATURES, "segmentation"),
            ("segmentation",),
            segmentation_columns,
            segmentation_protocol_columns,
        ),
        EvalTask(
            "robustness",
            "mean_corruption_top1",
            ("data", "finetune"),
            (*_SUBSETS, *_FEATURES, "robustness", "finetune"),
            ("robustness",),
            robustness_columns,
            robustness_protocol_columns,
        ),
        # no backbone: the k-NN and linear protocols on the flattened images
        EvalTask(
            "pixels",
            "knn_top1_k20",
            ("data",),
            (*_SUBSETS, "batch_size", "knn", "linear"),
            ("knn_linear",),
            pixels_columns(KNN, LINEAR),
        ),
    )
}


def declared_columns(task: str, metrics: Mapping[str, float], primary: str) -> list[MetricColumn]:
    """The report columns that ``task`` declares for a record of ``metrics`` (none for a
    task this table does not list)."""
    row = TASKS.get(task)
    return row.columns(metrics, primary) if row is not None else []


def primary_label(task: str) -> str:
    """The column label of ``task``'s primary metric."""
    row = TASKS[task]
    return next(
        c.label for c in row.columns({row.primary: 0.0}, row.primary) if c.metric == row.primary
    )


def tasks_feeding(table: str) -> list[str]:
    """The tasks whose results fill ``table``, in the order of TASKS."""
    return [t.name for t in TASKS.values() if table in t.tables]
