"""Runs that differ only in their seed, reported as one: the mean over seeds and its spread.

The workflow trains the main grid once per seed of ``experiment.seed`` and
``workflow.seeds``; the report would otherwise show one row per seed, or keep only the
newest. Main-grid runs of one experiment whose resolved configurations are equal except for
``experiment.seed``, ``experiment.run_name`` and the keys that do not change what is trained
(folk.config.RESUMABLE_CHANGES, the evaluations' settings excepted: runs evaluated with
another protocol are not merged) are merged: every evaluation gets the mean
of each metric over the seeds that have it and, in ``seed_std``, the sample standard
deviation over them (``workflow.seed_evals`` runs only some evaluations on the extra seeds).
An evaluation of one seed only, like a run alone, keeps its numbers unchanged.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import replace

from folk.config import RESUMABLE_CHANGES, flatten
from folk.report.collect import EvalResult, Run, _finite

# a run of the workflow's seeds at another commit may carry other workflow keys (a new
# benchmark setting) and is still the same training
_NOT_IDENTITY = ("experiment.seed", "experiment.run_name") + tuple(
    k for k in RESUMABLE_CHANGES if k != "eval."
)


def _identity(run: Run) -> str:
    flat = flatten(run.cfg)
    return repr(sorted((k, repr(v)) for k, v in flat.items() if not k.startswith(_NOT_IDENTITY)))


def _merge_evals(members: list[Run]) -> list[EvalResult]:
    by_key = [{(e.task, e.variant): e for e in run.evals} for run in members]
    out = []
    for key in sorted(set().union(*by_key)):
        having = [(run, k[key]) for run, k in zip(members, by_key) if key in k]
        if len(having) == 1:
            out.append(having[0][1])
            continue
        evals = [e for _, e in having]
        record = copy.deepcopy(evals[0].record)
        metrics, spread = {}, {}
        for name in evals[0].metrics:
            values = [_finite(e.metrics.get(name)) for e in evals]
            if any(v is None for v in values):
                continue
            metrics[name] = statistics.fmean(values)
            spread[name] = statistics.stdev(values)
        record.update(
            metrics=metrics, seed_std=spread, seeds=[r.cfg["experiment"]["seed"] for r, _ in having]
        )
        record["finished_at"] = max(str(e.record.get("finished_at", "")) for e in evals)
        out.append(
            EvalResult(path=evals[0].path, rel=";".join(e.rel for e in evals), record=record)
        )
    return out


def merge_seeds(runs: list[Run]) -> list[Run]:
    """The runs with each group of main-grid seed siblings replaced by one merged run."""
    groups: dict[tuple, list[Run]] = {}
    order: list[tuple] = []
    for run in runs:
        key = (run.experiment, _identity(run)) if not run.ablation else (id(run),)
        if key not in groups:
            order.append(key)
        groups.setdefault(key, []).append(run)
    out = []
    for key in order:
        members = sorted(groups[key], key=lambda r: r.cfg["experiment"]["seed"])
        if len(members) == 1:
            out.append(members[0])
            continue
        first = members[0]
        out.append(
            replace(
                first,
                rel=";".join(r.rel for r in members),
                evals=_merge_evals(members),
                seeds=[r.cfg["experiment"]["seed"] for r in members],
            )
        )
    return out
