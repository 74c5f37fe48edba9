"""The evaluation protocol beside each table: the ``eval.*`` settings of the tasks that fill
it (folk.eval_tasks: the sections each task reads), as the table's runs were evaluated with
them (their resolved config.yaml), and the data they saw. A setting that differs between
the runs of one table is listed with each of its values."""

from __future__ import annotations

import json

from folk.config import flatten
from folk.eval_tasks import ABLATION_TABLES, TASKS, tasks_feeding
from folk.report.collect import Run
from folk.report.table import Table
from folk.utils.keys import config_value

# what every evaluation of a table shares with its pre-training: the images and their size
DATA_KEYS = ("data.dataset", "data.train_subset", "data.test_subset", "model.img_size")


def _text(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _settings(cfgs: list[dict], keys: list[str]) -> list[str]:
    out = []
    for key in keys:
        values = []
        for cfg in cfgs:
            value = _text(config_value(cfg, key))
            if value not in values:
                values.append(value)
        out.append(f"`{key}` = " + " | ".join(f"`{v}`" for v in values))
    return out


def table_protocol(table: Table, runs: list[Run], defaults: dict) -> list[str]:
    """One line per task feeding ``table`` (then one for the data): its settings, from the
    configs of the runs behind the table's rows, or the defaults while it has none.
    ``runs`` holds every run a row may cite: the collected ones and the seed-merged ones."""
    name = ABLATION_TABLES if table.name.startswith("ablation_") else table.name
    tasks = tasks_feeding(name)
    if not tasks:
        return []
    by_rel = {r.rel: r for r in runs}
    unknown = [rel for rel in table.runs if rel not in by_rel]
    if unknown:  # the defaults would stand in for them, labelled as the runs' settings
        raise ValueError(f"table {table.name}: rows cite runs not given to the protocol: {unknown}")
    used = set(table.runs)
    cfgs = [by_rel[rel].cfg for rel in table.runs] or [defaults]
    source = "the runs' config.yaml" if used else "the defaults (no run yet)"
    lines = []
    for task in tasks:
        leaves = list(flatten(cfgs[0]["eval"], "eval."))
        keys: list[str] = []
        for section in TASKS[task].reads:
            name = f"eval.{section}"
            keys += [k for k in leaves if (k == name or k.startswith(f"{name}.")) and k not in keys]
        lines.append(f"{task}: " + ", ".join(_settings(cfgs, keys)))
    lines.append("data: " + ", ".join(_settings(cfgs, list(DATA_KEYS))))
    return [f"Protocol (from {source}):"] + lines


def add_protocols(tables: list[Table], runs: list[Run], defaults: dict) -> None:
    for table in tables:
        table.protocol = table_protocol(table, runs, defaults)
