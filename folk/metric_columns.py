"""The report columns of an evaluation's metrics, and the metric names they are read from.

A ``MetricColumn`` says how one metric of an ``eval/<task>/metrics.json`` is shown: its
column label, the group of columns it belongs to within its task, its place among the
task's columns (``order``, compared as a tuple) and the metric holding its standard
deviation, where it has one. ``folk.evals.common.write_metrics`` writes the columns of a
record into it (key ``columns``); a record written before lacks them and gets the ones
its task declares here, from the metric names the task writes (the names below are the
only spellings: the evaluations build them with these functions).

Torch-free: the configuration, the workflow and the report read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from folk.utils.text import fmt_number

_JSON_KEYS = ("metric", "label", "group", "order", "std")
_TOP1 = "_top1"


@dataclass(frozen=True)
class MetricColumn:
    metric: str  # key of 'metrics' holding the value
    label: str  # column header in the report
    group: str  # family of columns within the task (e.g. "fraction")
    order: tuple = ()  # place among the task's columns
    std: str | None = None  # key of 'metrics' holding its standard deviation

    def to_json(self) -> dict:
        return {
            "metric": self.metric,
            "label": self.label,
            "group": self.group,
            "order": list(self.order),
            "std": self.std,
        }

    @classmethod
    def from_json(cls, data: dict) -> "MetricColumn":
        return cls(
            metric=data["metric"],
            label=data["label"],
            group=data["group"],
            order=tuple(data["order"]),
            std=data["std"],
        )


def columns_problem(columns, metrics: Mapping) -> str | None:
    """Why ``columns`` (the value of a record's key ``columns``) cannot be read, or None."""
    if not isinstance(columns, list):
        return f"key 'columns' is a JSON {type(columns).__name__}, not a list"
    for i, col in enumerate(columns):
        where = f"key 'columns[{i}]'"
        if not isinstance(col, dict) or any(k not in col for k in _JSON_KEYS):
            return f"{where} lacks one of {', '.join(_JSON_KEYS)}"
        if not all(isinstance(col[k], str) for k in ("metric", "label", "group")):
            return f"{where}: 'metric', 'label' and 'group' must be strings"
        if not isinstance(col["order"], list) or not all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in col["order"]
        ):
            return f"{where}: 'order' must be a list of numbers and strings"
        if col["std"] is not None and not isinstance(col["std"], str):
            return f"{where}: 'std' must be a metric name or null"
        for key in ("metric", "std"):
            if col[key] is not None and col[key] not in metrics:
                return f"{where}: {key} {col[key]!r} is not among 'metrics'"
    return None


# ---------------------------------------------------------------- one column per task


def primary_column(label: str):
    """The columns of a task shown by its primary metric alone (k-NN, linear probe, ...)."""

    def columns(metrics: Mapping, primary: str) -> list[MetricColumn]:
        return [MetricColumn(primary, label, "top1", (0,))]

    return columns


# ---------------------------------------------------------------- raw pixels


def pixels_columns(knn_label: str, linear_label: str):
    """The raw-pixel baseline: its k-NN primary and its linear probe, in the columns of
    those two tasks."""

    def columns(metrics: Mapping, primary: str) -> list[MetricColumn]:
        out = [MetricColumn(primary, knn_label, "knn", (0,))]
        if "linear_top1" in metrics:
            out.append(MetricColumn("linear_top1", linear_label, "linear", (1,)))
        return out

    return columns


# ---------------------------------------------------------------- segmentation

SEGMENTATION_COLUMNS = (  # (metric, label): the trained head's, then the majority class's
    ("miou", "mIoU"),
    ("pixel_acc", "pixel acc."),
)
MAJORITY_SUFFIX = "_majority"


def segmentation_columns(metrics: Mapping, primary: str) -> list[MetricColumn]:
    out = []
    for group, suffix in (("head", ""), ("majority", MAJORITY_SUFFIX)):
        for i, (metric, label) in enumerate(SEGMENTATION_COLUMNS):
            if metric + suffix in metrics:
                out.append(MetricColumn(metric + suffix, label, group, (i,)))
    return out


def segmentation_protocol_columns(eval_cfg: dict) -> list[MetricColumn]:
    return segmentation_columns({m: 0.0 for m, _ in SEGMENTATION_COLUMNS}, "miou")


# ---------------------------------------------------------------- few-shot

FEWSHOT_KINDS = ("fraction", "shots", "file")  # the column groups, in this order
_FEWSHOT_FILE = {"file": (0, "user list (fine-tune)"), "file_logreg": (1, "user list (logreg)")}


def fraction_name(fraction: float) -> str:
    """0.01 -> 'frac1pct', 0.1 -> 'frac10pct', 0.005 -> 'frac0.5pct'."""
    return f"frac{round(fraction * 100, 6):g}pct"


def shot_name(k: int) -> str:
    return f"shot{int(k)}"


def _fewshot_stem_column(stem: str) -> tuple[str, tuple, str] | None:
    """(group, order, label) of the set named ``stem`` (fraction_name, shot_name, file)."""
    if stem in _FEWSHOT_FILE:
        index, label = _FEWSHOT_FILE[stem]
        return "file", (FEWSHOT_KINDS.index("file"), float(index)), label
    try:
        if stem.startswith("frac") and stem.endswith("pct"):
            percent = float(stem[len("frac") : -len("pct")])
            return (
                "fraction",
                (FEWSHOT_KINDS.index("fraction"), percent),
                f"{fmt_number(percent)}% labels",
            )
        if stem.startswith("shot"):
            k = int(stem[len("shot") :])
            return "shots", (FEWSHOT_KINDS.index("shots"), float(k)), f"{k}-shot"
    except ValueError:
        return None
    return None


def fewshot_columns(metrics: Mapping, primary: str) -> list[MetricColumn]:
    """One column per training set: ``<set>_top1_mean`` with its ``_std`` (over seeds), or
    ``<set>_top1`` of one seed."""
    found: dict[str, MetricColumn] = {}
    for name in metrics:
        stem, top1, stat = name.partition(_TOP1)
        if not top1 or stat not in ("", "_mean"):
            continue
        place = _fewshot_stem_column(stem)
        if place is None or (stem in found and stat == ""):  # the mean over seeds comes first
            continue
        std = f"{stem}{_TOP1}_std" if stat == "_mean" and f"{stem}{_TOP1}_std" in metrics else None
        group, order, label = place
        found[stem] = MetricColumn(name, label, group, order, std)
    return list(found.values())


def fewshot_protocol_columns(eval_cfg: dict) -> list[MetricColumn]:
    fs = eval_cfg["fewshot"]
    stems = [fraction_name(f) for f in fs["fractions"]] + [shot_name(k) for k in fs["shots"]]
    names = [f"{s}{_TOP1}{stat}" for s in stems for stat in ("_mean", "_std")]
    return fewshot_columns(dict.fromkeys(names, 0.0), "")


# ---------------------------------------------------------------- robustness

ROBUSTNESS_PRIMARY = "mean_corruption_top1"
CLEAN = "clean"
PASS_KINDS = ("low", "high")


def top1_name(condition: str) -> str:
    """The metric of a condition's top-1 accuracy."""
    return condition + _TOP1


def _pass_prefix(kind: str) -> str:
    return f"{kind}pass_r"


def pass_name(kind: str, radius: float) -> str:
    """The condition of a low- or high-pass filter of ``radius`` (stated at 224 px)."""
    return f"{_pass_prefix(kind)}{float(radius):g}"


def severity_name(corruption: str, severity: int) -> str:
    return f"{corruption}_s{severity}"


def corruption_mean_metric(corruption: str) -> str:
    return f"{corruption}_mean{_TOP1}"


def robustness_columns(metrics: Mapping, primary: str) -> list[MetricColumn]:
    """The mean under corruption, clean accuracy, each corruption's mean over severities and
    each filter radius; the per-severity accuracies stay in metrics.json only."""
    out = []
    for name in metrics:
        if not name.endswith(_TOP1):
            continue
        stem = name[: -len(_TOP1)]
        if name == ROBUSTNESS_PRIMARY:
            out.append(MetricColumn(name, "mean under corruption", "summary", (0,)))
        elif stem == CLEAN:
            out.append(MetricColumn(name, "clean", "summary", (1,)))
        elif stem.endswith("_mean"):
            corruption = stem[: -len("_mean")]
            out.append(
                MetricColumn(name, corruption.replace("_", " "), "corruption", (2, corruption))
            )
        for i, kind in enumerate(PASS_KINDS):
            radius = stem[len(_pass_prefix(kind)) :]
            if stem.startswith(_pass_prefix(kind)) and _is_number(radius):
                out.append(
                    MetricColumn(
                        name, f"{kind}-pass r={radius}", f"{kind}-pass", (3 + i, float(radius))
                    )
                )
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def robustness_protocol_columns(eval_cfg: dict) -> list[MetricColumn]:
    rb = eval_cfg["robustness"]
    names = [ROBUSTNESS_PRIMARY, top1_name(CLEAN)]
    names += [corruption_mean_metric(c) for c in rb["corruptions"]]
    names += [top1_name(pass_name(k, r)) for k in PASS_KINDS for r in rb["filter_radii"]]
    return robustness_columns(dict.fromkeys(names, 0.0), ROBUSTNESS_PRIMARY)


def union(columns: Iterable[MetricColumn]) -> list[MetricColumn]:
    """One column per label (the first seen), sorted by order: the layout of a table over
    several records."""
    by_label: dict[str, MetricColumn] = {}
    for col in columns:
        by_label.setdefault(col.label, col)
    return sorted(by_label.values(), key=lambda c: c.order)
