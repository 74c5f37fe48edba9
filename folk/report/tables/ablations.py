"""Ablation tables: the variants of the main grid that differ in one component
(VARIANT_ABLATIONS), the sweeps of workflow.ablations (each from its entry: title, labels,
the keys it sets) and any other experiment.ablation, each with k-NN, linear-probe and
fine-tuning top-1."""

from __future__ import annotations

from typing import Callable

from folk.ablations import Ablation, ablations
from folk.config import defaults, flatten
from folk.filter_registry import FILTERS
from folk.utils.keys import config_value
from folk.report.collect import Run
from folk.report.naming import fmt_value, variant_rank
from folk.report.table import OURS, Column, Table
from folk.report.tables.building import (
    ABLATION_COLUMNS,
    _TASK_COLUMN,
    _attach,
    _eval_cell,
    _finalise,
    _find_row,
    _main_grid,
    _place,
)


def _filter_label(run: Run) -> str:
    name = run.cfg["method"]["filter"]
    return FILTERS[name].label(run.cfg) if name in FILTERS else name


def _yes(value) -> str:
    return "yes" if value else "no"


# name: (title, variants of the main grid that form it, varied columns: label -> value of run)
VARIANT_ABLATIONS: dict[str, tuple[str, set[str], dict[str, Callable[[Run], str]]]] = {
    "filter": (
        "Ablation: student filter",
        {
            "folk",
            "folk_mfm_filters",
            "folk_random_frequency",
            "folk_random_patch",
            "folk_com_only",
            "folk_rcom_only",
            "dino_2view",
        },
        {"student filter": _filter_label},
    ),
    "distillation": (
        "Ablation: self-distillation on/off",
        {"folk", "mfm_comrcom"},
        {
            "distillation": lambda r: _yes(r.cfg["method"]["distillation"]),
            "masked views": lambda r: str(r.cfg["method"]["num_views"]),
        },
    ),
    "reconstruction": (
        "Ablation: reconstruction loss on/off",
        {"folk", "folk_no_rec"},
        {"reconstruction": lambda r: _yes(r.cfg["method"]["reconstruction"])},
    ),
}


def _sweeps(runs: list[Run]) -> dict[str, Ablation]:
    """The entries of workflow.ablations that make tables: the defaults' (each table
    exists, empty until its runs do), then those only runs define, as each run's own
    config states its ablation."""
    sweeps = ablations(defaults())
    for run in sorted(runs, key=lambda r: r.rel):
        own = run.cfg["workflow"]["ablations"]
        if run.ablation in own and run.ablation not in sweeps:
            sweeps[run.ablation] = ablations(run.cfg)[run.ablation]
    first = list(ablations(defaults()))
    return {name: sweeps[name] for name in first + sorted(set(sweeps) - set(first))}


def _order(value) -> tuple:
    """Sort key of one set key's value: numbers by value, lists by length then items."""
    if isinstance(value, list):
        return (1, len(value), tuple(value))
    return (0, value) if isinstance(value, (int, float)) else (2, repr(value))


def _sweep_columns(sweep: Ablation) -> dict[str, Callable[[Run], str]]:
    return {
        label: (lambda r, k=k: fmt_value(config_value(r.cfg, k)))
        for label, k in zip(sweep.labels, sweep.keys)
    }


def _sweep_order(sweep: Ablation) -> Callable[[Run], tuple]:
    return lambda r: tuple(_order(config_value(r.cfg, k)) for k in sweep.keys)


_IGNORED_SECTIONS = (
    "experiment.",
    "workflow.",
    "launch.",
    "slurm.",
    "data.root",
    "data.num_workers",
    "eval.",
)


def _varied_keys(runs: list[Run]) -> list[str]:
    """Configuration keys whose values differ among ``runs`` (what a generic ablation varies)."""
    flat = [flatten(r.cfg) for r in runs]
    keys = sorted({k for f in flat for k in f if not k.startswith(_IGNORED_SECTIONS)})
    return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]


def _ablation_table(
    name: str,
    title: str,
    members: list[Run],
    varied: dict[str, Callable[[Run], str]],
    sort_key: Callable[[Run], tuple],
    description: str,
) -> Table:
    table = Table(
        name=f"ablation_{name}",
        title=title,
        description=description,
        key_columns=list(varied) + ["method", "backbone", "dataset", "run"],
        columns=[Column(c.name) for c in ABLATION_COLUMNS],
        empty_note=f"No runs of this ablation yet (experiment.ablation = '{name}').",
    )
    members = sorted(members, key=lambda r: (r.dataset, r.backbone, sort_key(r), r.rel))
    for run in members:
        keys = {label: get(run) for label, get in varied.items()}
        keys.update(
            {
                "method": run.method,
                "backbone": run.backbone,
                "dataset": run.dataset,
                "run": run.name + ("" if run.ablation else " (main grid)"),
            }
        )
        evs = {col: run.eval(task, None) for task, col in _TASK_COLUMN.items()}
        row = _attach(_find_row(table.rows, keys, OURS), run, evs.values())
        for col, ev in evs.items():
            _place(table, row, col, _eval_cell(run, ev))
    return _finalise(table)


def ablation_tables(runs: list[Run]) -> list[Table]:
    tables = []
    main = [r for r in _main_grid(runs) if not r.is_random_init]
    for name, (title, variants, varied) in VARIANT_ABLATIONS.items():
        members = [r for r in main if r.variant in variants] + [
            r for r in runs if r.ablation == name
        ]
        order = sorted(variants, key=variant_rank)
        tables.append(
            _ablation_table(
                name,
                title,
                members,
                varied,
                lambda r: (variant_rank(r.variant),),
                f"Variants of the main grid that differ only in {', '.join(varied)} "
                f"({', '.join(order)}), plus runs with experiment.ablation = '{name}'; top-1 (%) of "
                "k-NN, linear probe and fine-tuning.",
            )
        )
    sweeps = _sweeps(runs)
    for name, spec in sweeps.items():
        sweep = [r for r in runs if r.ablation == name]
        tables.append(
            _ablation_table(
                name,
                spec.title,
                _with_baseline(sweep, main),
                _sweep_columns(spec),
                _sweep_order(spec),
                f"Runs with experiment.ablation = '{name}' and the main-"
                "grid run of the same variant and experiment (the "
                "default setting); top-1 (%) of k-NN, linear probe and "
                "fine-tuning.",
            )
        )
    known = set(VARIANT_ABLATIONS) | set(sweeps)
    for name in sorted({r.ablation for r in runs} - known - {""}):
        sweep = [r for r in runs if r.ablation == name]
        members = _with_baseline(sweep, main)
        keys = _varied_keys(members)
        varied = {k: (lambda r, k=k: fmt_value(flatten(r.cfg).get(k))) for k in keys} or {
            "setting": lambda r: r.name
        }
        tables.append(
            _ablation_table(
                name,
                f"Ablation: {name}",
                members,
                varied,
                lambda r: tuple(repr(flatten(r.cfg).get(k)) for k in keys),
                f"Runs with experiment.ablation = '{name}' (and the matching main-grid run); the "
                f"columns before 'method' are the configuration keys that differ among them.",
            )
        )
    return tables


def _with_baseline(sweep: list[Run], main: list[Run]) -> list[Run]:
    """The sweep's runs plus the main-grid runs of the same (experiment, variant)."""
    pairs = {(r.experiment, r.variant) for r in sweep}
    return [r for r in main if (r.experiment, r.variant) in pairs] + sweep
