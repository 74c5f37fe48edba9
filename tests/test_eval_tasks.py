"""The table of evaluation tasks (folk.eval_tasks) is the one list: every row has its module,
every place that names the tasks reads the table, and every record states its columns."""

from __future__ import annotations

import argparse
import ast
import json

import pytest
from conftest import REPO

from folk.config import defaults
from folk.config.constraints import CONSTRAINTS
from folk.eval_tasks import ABLATION_TABLES, INPUTS, TASKS, declared_columns

TASK_NAMES = tuple(TASKS)


def test_every_task_is_a_module_with_run():
    for task in TASKS.values():
        path = REPO / (task.module.replace(".", "/") + ".py")
        assert path.is_file(), f"{task.name}: no {path.relative_to(REPO)}"
        runs = [
            n
            for n in ast.parse(path.read_text()).body
            if isinstance(n, ast.FunctionDef) and n.name == "run"
        ]
        assert runs and [a.arg for a in runs[0].args.args] == ["cfg", "run_dir", "out_dir", "log"]


def test_every_list_of_tasks_is_the_table():
    for key in ("workflow.evals", "workflow.seed_evals", "workflow.ablation_evals"):
        assert CONSTRAINTS[key]["items"]["enum"] == list(TASK_NAMES), key
    from folk.commands.eval import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    task = next(a for a in parser._actions if a.dest == "task")
    assert tuple(task.choices) == TASK_NAMES


def test_rows_name_known_inputs_keys_and_tables():
    from folk.report.collect import load_reference
    from folk.report.tables import build_tables

    tables = {t.name for t in build_tables([], load_reference(), defaults())}
    eval_keys = defaults()["eval"]
    for task in TASKS.values():
        assert set(task.inputs) <= set(INPUTS), task.name
        assert set(task.reads) <= set(eval_keys), task.name
        for table in task.tables:
            assert table in tables or (
                table == ABLATION_TABLES and any(t.startswith("ablation_") for t in tables)
            )


def test_robustness_columns_leave_the_severities_in_the_record():
    metrics = dict.fromkeys(
        [
            "mean_corruption_top1",
            "clean_top1",
            "jpeg_s1_top1",
            "jpeg_mean_top1",
            "lowpass_r4_top1",
            "highpass_r0.5_top1",
        ],
        1.0,
    )
    got = [
        (c.metric, c.label, c.order)
        for c in sorted(
            declared_columns("robustness", metrics, "mean_corruption_top1"), key=lambda c: c.order
        )
    ]
    assert got == [
        ("mean_corruption_top1", "mean under corruption", (0,)),
        ("clean_top1", "clean", (1,)),
        ("jpeg_mean_top1", "jpeg", (2, "jpeg")),
        ("lowpass_r4_top1", "low-pass r=4", (3, 4.0)),
        ("highpass_r0.5_top1", "high-pass r=0.5", (4, 0.5)),
    ]


def test_protocol_columns_are_the_names_the_protocol_writes():
    ev = defaults()["eval"]
    fewshot = {c.metric for c in TASKS["fewshot"].protocol_columns(ev)}
    assert fewshot == {
        f"frac{round(f * 100, 6):g}pct_top1_mean" for f in ev["fewshot"]["fractions"]
    } | {f"shot{k}_top1_mean" for k in ev["fewshot"]["shots"]}
    robustness = {c.metric for c in TASKS["robustness"].protocol_columns(ev)}
    assert {"mean_corruption_top1", "clean_top1"} <= robustness
    assert {f"{c}_mean_top1" for c in ev["robustness"]["corruptions"]} <= robustness


def test_a_record_states_its_columns_and_older_records_stay_valid(tmp_path):
    from folk.config import load_config
    from folk.evals.common import record_problem, task_dir, write_metrics

    cfg = load_config(None, ["experiment.run_name=r"])
    out = task_dir(tmp_path, "fewshot")
    out.mkdir(parents=True)
    metrics = {"shot1_top1_mean": 30.0, "shot1_top1_std": 2.0}
    record = write_metrics(
        out,
        cfg=cfg,
        run_dir=tmp_path,
        task="fewshot",
        variant="",
        dataset="fashion_mnist",
        split="test",
        metrics=metrics,
        primary="shot1_top1_mean",
        seed=0,
        epochs=0,
        started=0.0,
    )
    assert record["columns"] == [
        {
            "metric": "shot1_top1_mean",
            "label": "1-shot",
            "group": "shots",
            "order": [1, 1.0],
            "std": "shot1_top1_std",
        }
    ]
    path = out / "metrics.json"
    assert json.loads(path.read_text())["columns"] == record["columns"]
    assert record_problem(path) is None
    del record["columns"]  # as written before records stated columns
    path.write_text(json.dumps(record))
    assert record_problem(path) is None
    record["columns"] = [{"metric": "shot1_top1_mean", "label": "1-shot"}]
    path.write_text(json.dumps(record))
    assert "lacks one of" in record_problem(path)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_every_task_declares_the_column_of_its_primary(task):
    row = TASKS[task]
    if task == "fewshot":  # the primary names the protocol's smallest k
        primary, metrics = "shot1_top1_mean", {"shot1_top1_mean": 1.0, "shot1_top1_std": 0.0}
    else:
        primary, metrics = row.primary, {row.primary: 1.0}
    assert primary in {c.metric for c in declared_columns(task, metrics, primary)}
