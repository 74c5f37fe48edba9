"""Ablation tables: the variants of the main grid that differ in one component
(VARIANT_ABLATIONS), the sweeps of workflow.ablations (SWEEP_ABLATIONS), and any other
experiment.ablation, each with k-NN, linear-probe and fine-tuning top-1."""
from __future__ import annotations

from typing import Callable

from folk.config import flatten
from folk.report.collect import Run
from folk.report.naming import fmt_number, fmt_value, variant_rank
from folk.report.table import OURS, Column, Table
from folk.report.tables.building import (ABLATION_COLUMNS, _TASK_COLUMN, _attach, _eval_cell,
                                         _finalise, _find_row, _main_grid, _place)


def _filter_label(run: Run) -> str:
    m, f = run.cfg["method"], run.cfg["filter"]
    name = m["filter"]
    if name == "com_rcom":
        p = m["p_com"]
        if p == 1.0:
            return "Com only"
        if p == 0.0:
            return "RCom only"
        return f"Com/RCom (p_com={fmt_number(p)})"
    if name == "mfm":
        return f"MFM low/high-pass (r={fmt_number(f['mfm_radius'])}@{f['mfm_radius_ref_size']}px)"
    if name == "random_frequency":
        return f"random frequency (rho={fmt_number(f['random_rho'])})"
    if name == "random_patch":
        return (f"random patch ({fmt_number(f['patch_mask_ratio'] * 100)}%, "
                f"{f['patch_mask_size']}px)")
    return "none (unmasked views)"


def _yes(value) -> str:
    return "yes" if value else "no"


# name: (title, variants of the main grid that form it, varied columns: label -> value of run)
VARIANT_ABLATIONS: dict[str, tuple[str, set[str], dict[str, Callable[[Run], str]]]] = {
    "filter": ("Ablation: student filter",
               {"folk", "folk_mfm_filters", "folk_random_frequency", "folk_random_patch",
                "folk_com_only", "folk_rcom_only", "dino_2view"},
               {"student filter": _filter_label}),
    "distillation": ("Ablation: self-distillation on/off",
                     {"folk", "mfm_comrcom"},
                     {"distillation": lambda r: _yes(r.cfg["method"]["distillation"]),
                      "masked views": lambda r: str(r.cfg["method"]["num_views"])}),
    "reconstruction": ("Ablation: reconstruction loss on/off",
                       {"folk", "folk_no_rec"},
                       {"reconstruction": lambda r: _yes(r.cfg["method"]["reconstruction"])}),
}

# name: (title, varied columns, sort key) for the sweeps of workflow.ablations
SWEEP_ABLATIONS: dict[str, tuple[str, dict[str, Callable[[Run], str]], Callable[[Run], tuple]]] = {
    "portions": ("Ablation: portion set Q",
                 {"portion set Q": lambda r: fmt_value(r.cfg["filter"]["portions"])},
                 lambda r: (len(r.cfg["filter"]["portions"]), r.cfg["filter"]["portions"])),
    "p_com": ("Ablation: probability of Com (p_com)",
              {"p_com": lambda r: fmt_number(r.cfg["method"]["p_com"])},
              lambda r: (r.cfg["method"]["p_com"],)),
    "loss_weights": ("Ablation: loss weights",
                     {"λ_rec": lambda r: fmt_number(r.cfg["pretrain"]["lambda_rec"]),
                      "λ_kd": lambda r: fmt_number(r.cfg["pretrain"]["lambda_kd"])},
                     lambda r: (r.cfg["pretrain"]["lambda_rec"], r.cfg["pretrain"]["lambda_kd"])),
    "epochs": ("Ablation: pre-training epochs",
               {"pre-train epochs": lambda r: str(r.cfg["pretrain"]["epochs"])},
               lambda r: (r.cfg["pretrain"]["epochs"],)),
}

_IGNORED_SECTIONS = ("experiment.", "workflow.", "launch.", "slurm.", "data.root",
                     "data.num_workers", "eval.")


def _varied_keys(runs: list[Run]) -> list[str]:
    """Configuration keys whose values differ among ``runs`` (what a generic ablation varies)."""
    flat = [flatten(r.cfg) for r in runs]
    keys = sorted({k for f in flat for k in f if not k.startswith(_IGNORED_SECTIONS)})
    return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]


def _ablation_table(name: str, title: str, members: list[Run],
                    varied: dict[str, Callable[[Run], str]], sort_key: Callable[[Run], tuple],
                    description: str) -> Table:
    table = Table(
        name=f"ablation_{name}", title=title, description=description,
        key_columns=list(varied) + ["method", "backbone", "dataset", "run"],
        columns=[Column(c.name) for c in ABLATION_COLUMNS],
        empty_note=f"No runs of this ablation yet (experiment.ablation = '{name}').")
    members = sorted(members, key=lambda r: (r.dataset, r.backbone, sort_key(r), r.rel))
    for run in members:
        keys = {label: get(run) for label, get in varied.items()}
        keys.update({"method": run.method, "backbone": run.backbone, "dataset": run.dataset,
                     "run": run.name + ("" if run.ablation else " (main grid)")})
        evs = {col: run.eval(task, None) for task, col in _TASK_COLUMN.items()}
        row = _attach(_find_row(table.rows, keys, OURS), run, evs.values())
        for col, ev in evs.items():
            _place(table, row, col, _eval_cell(run, ev))
    return _finalise(table)


def ablation_tables(runs: list[Run]) -> list[Table]:
    tables = []
    main = [r for r in _main_grid(runs) if not r.is_random_init]
    for name, (title, variants, varied) in VARIANT_ABLATIONS.items():
        members = [r for r in main if r.variant in variants] + \
                  [r for r in runs if r.ablation == name]
        order = sorted(variants, key=variant_rank)
        tables.append(_ablation_table(
            name, title, members, varied,
            lambda r: (variant_rank(r.variant),),
            f"Variants of the main grid that differ only in {', '.join(varied)} "
            f"({', '.join(order)}), plus runs with experiment.ablation = '{name}'; top-1 (%) of "
            "k-NN, linear probe and fine-tuning."))
    for name, (title, varied, sort_key) in SWEEP_ABLATIONS.items():
        sweep = [r for r in runs if r.ablation == name]
        tables.append(_ablation_table(name, title, _with_baseline(sweep, main), varied, sort_key,
                                      f"Runs with experiment.ablation = '{name}' and the main-"
                                      "grid run of the same variant and experiment (the "
                                      "default setting); top-1 (%) of k-NN, linear probe and "
                                      "fine-tuning."))
    known = set(VARIANT_ABLATIONS) | set(SWEEP_ABLATIONS)
    for name in sorted({r.ablation for r in runs} - known - {""}):
        sweep = [r for r in runs if r.ablation == name]
        members = _with_baseline(sweep, main)
        keys = _varied_keys(members)
        varied = {k: (lambda r, k=k: fmt_value(flatten(r.cfg).get(k))) for k in keys} or \
                 {"setting": lambda r: r.name}
        tables.append(_ablation_table(
            name, f"Ablation: {name}", members, varied,
            lambda r: tuple(repr(flatten(r.cfg).get(k)) for k in keys),
            f"Runs with experiment.ablation = '{name}' (and the matching main-grid run); the "
            f"columns before 'method' are the configuration keys that differ among them."))
    return tables


def _with_baseline(sweep: list[Run], main: list[Run]) -> list[Run]:
    """The sweep's runs plus the main-grid runs of the same (experiment, variant)."""
    pairs = {(r.experiment, r.variant) for r in sweep}
    return [r for r in main if (r.experiment, r.variant) in pairs] + sweep
