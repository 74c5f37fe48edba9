"""docs/extending.md: each recipe there, followed as a user would, works.
A filter or an evaluation is one new module plus one registry row, so each test writes the
module into a temporary directory and adds the row before the rest of folk is imported
(what editing the registry's file does), in a fresh interpreter."""

from __future__ import annotations

import re

import json
import subprocess
import sys
import textwrap

from conftest import REPO, tiny_overrides

TOY_FILTER = '''
import torch


def scale(x, generator, *, strength, clamp=True):
    """A toy filter: the image at `strength` of its amplitude, every frequency kept."""
    out = x.float() * strength
    b, _, h, w = x.shape
    return (out.clamp(0.0, 1.0) if clamp else out), torch.ones((b, 1, h, w))
'''

ADD_FILTER_ROW = """
from folk import filter_registry as registry

registry.FILTERS["toy_scale"] = registry.FilterSpec(
    "toy_filter:scale",
    {"strength": registry.key("filter.random_rho"), "clamp": registry.key("filter.clamp")},
    lambda cfg: f"toy scale ({cfg['filter']['random_rho']:g})")
"""


def run_python(code: str, path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{path}:{REPO}", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_toy_filter_is_one_module_and_one_registry_row(tmp_path, fashion_root):
    (tmp_path / "toy_filter.py").write_text(TOY_FILTER)
    overrides = tiny_overrides(fashion_root) + ["method.filter=toy_scale", "filter.random_rho=0.25"]
    code = ADD_FILTER_ROW + textwrap.dedent(f"""
        import json
        import torch
        from folk.config import load_config
        from folk.engine.step import FolkObjective
        from folk.errors import ConfigError
        from folk.models import build_student_teacher

        cfg = load_config(None, {overrides!r})
        torch.manual_seed(0)
        student, teacher = build_student_teacher(cfg)
        objective = FolkObjective(cfg, student, teacher, torch.device("cpu"))
        views = [torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(i))
                 for i in range(2)]
        loss, terms = objective(views, 0.04, torch.Generator().manual_seed(1))
        filtered, _ = objective.filter(views[0], generator=torch.Generator(),
                                       **objective.filter_kwargs)
        try:
            load_config(None, {overrides[:-2]!r} + ["method.filter=toy_other"])
            refused = ""
        except ConfigError as exc:
            refused = str(exc)
        print(json.dumps({{
            "loss": float(loss), "terms": sorted(terms),
            "max_error": float((filtered - 0.25 * views[0]).abs().max()),
            "keys": list(registry.FILTERS["toy_scale"].config_keys),
            "label": registry.FILTERS["toy_scale"].label(cfg), "refused": refused}}))
        """)
    result = run_python(code, tmp_path)
    assert result["max_error"] == 0.0  # the step's student views are the toy filter's
    assert result["loss"] == result["loss"] and abs(result["loss"]) < 1e6
    assert {"loss", "loss_kd", "loss_rec"} <= set(result["terms"])
    assert result["keys"] == ["filter.random_rho", "filter.clamp"]
    assert result["label"] == "toy scale (0.25)"
    # the configuration's choices are the registry's rows
    assert "'method.filter'" in result["refused"] and "toy_scale" in result["refused"]


def test_a_toy_variant_is_one_registry_row(tmp_path):
    code = textwrap.dedent("""
        import json
        from folk.variants import VARIANTS

        VARIANTS["toy_rcom_one_view"] = dict(filter="com_rcom", num_views=1, reconstruction=True,
                                             distillation=True, p_com=0.0, augment="dino",
                                             optim="dino")
        from folk.config import load_config

        cfg = load_config(None, ["pretrain.variant=toy_rcom_one_view"])
        print(json.dumps({"method": cfg["method"], "preset": cfg["augment"]["preset"],
                          "recipe": cfg["pretrain"]["optim_recipe"],
                          "lr": cfg["pretrain"]["base_lr"]}))
        """)
    result = run_python(code, tmp_path)
    assert result["method"] == {
        "filter": "com_rcom",
        "num_views": 1,
        "reconstruction": True,
        "distillation": True,
        "p_com": 0.0,
    }
    # the row names the recipes it trains with, and resolution fills them in
    assert (result["preset"], result["recipe"]) == ("dino", "dino")
    assert result["lr"] == 1.0e-3  # DINO's 5e-4 per 256 images, stated per 512


def test_a_new_ablation_is_one_entry_of_workflow_ablations():
    from folk.ablations import ablations
    from folk.config import load_config

    cfg = load_config(
        None,
        [
            "workflow.ablations.drop_path={set: model.drop_path, "
            "values: [0.0, 0.2], labels: [stochastic depth]}"
        ],
    )
    grid = ablations(cfg)["drop_path"]
    assert grid.title == "Ablation: drop_path" and grid.labels == ("stochastic depth",)
    assert [grid.run_name("folk", v) for v in grid.values] == [
        "folk-drop_path0",
        "folk-drop_path0.2",
    ]
    assert grid.sets(0.2) == ["model.drop_path=0.2"]
    # the defaults' entries are still there, and a list alone changes one's values
    cfg = load_config(None, ["workflow.ablations.p_com=[0.1]"])
    assert ablations(cfg)["p_com"].values == (0.1,)
    assert ablations(cfg)["p_com"].sets(0.1) == ["filter.p_com=0.1"]


TOY_EVALUATION = '''
def run(cfg, run_dir, out_dir, log):
    """A toy evaluation: the share of the image a ViT patch covers, in percent."""
    m = cfg["model"]
    share = 100.0 * m["patch_size"] ** 2 / m["img_size"] ** 2
    log.info("patch share %.2f %%", share)
    return dict(dataset=cfg["data"]["dataset"], split="none", metrics={"patch_share": share},
                primary="patch_share", seed=cfg["experiment"]["seed"], epochs=0)
'''

ADD_TASK_ROW = """
import folk.evals
from folk import eval_tasks as registry
from folk.metric_columns import primary_column

# the module is folk/evals/toy_patch_share.py as far as the package can tell
folk.evals.__path__.append(TOY_DIR)
registry.TASKS["toy_patch_share"] = registry.EvalTask(
    "toy_patch_share", "patch_share", ("data",), ("batch_size",), ("knn_linear",),
    primary_column("patch share (%)"))
"""


def test_a_toy_evaluation_is_one_module_and_one_registry_row(tmp_path, fashion_root):
    from folk.config import load_config, save_config

    (tmp_path / "toy_patch_share.py").write_text(TOY_EVALUATION)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_config(load_config(None, tiny_overrides(fashion_root)), run_dir / "config.yaml")
    code = (
        f"TOY_DIR = {str(tmp_path)!r}\n"
        + ADD_TASK_ROW
        + textwrap.dedent(f"""
        import json
        from folk.cli import main
        from folk.config import load_config

        status = main(["eval", "toy_patch_share", "--run", {str(run_dir)!r}])
        cfg = load_config(None, ["workflow.evals=[knn, toy_patch_share]"])
        print(json.dumps({{"status": status, "evals": cfg["workflow"]["evals"]}}))
        """)
    )
    result = run_python(code, tmp_path)
    assert result == {"status": 0, "evals": ["knn", "toy_patch_share"]}
    record = json.loads((run_dir / "eval" / "toy_patch_share" / "metrics.json").read_text())
    assert record["metrics"] == {"patch_share": 100.0 * 8**2 / 32**2}  # 8 px of 32 px
    assert record["primary"] == "patch_share" and record["task"] == "toy_patch_share"
    assert record["columns"] == [
        {
            "metric": "patch_share",
            "label": "patch share (%)",
            "group": "top1",
            "order": [0],
            "std": None,
        }
    ]


def test_a_toy_table_is_one_builder_and_one_registry_row(tmp_path, monkeypatch):
    from report_fixtures import build_runs

    from folk.cli import main
    from folk.report import tables
    from folk.report.table import OURS, Cell, Column, Row, Table

    def patch_share_table(inputs):
        """A toy table: each main-grid run's ViT patch size against its image size."""
        table = Table(
            name="toy_patch_share",
            title="Toy: patch share",
            description="The share of the image one ViT patch covers, per run.",
            key_columns=["run"],
            columns=[Column("patch share (%)")],
            empty_note="No runs.",
        )
        for run in sorted(inputs.runs, key=lambda r: r.name):
            m = run.cfg["model"]
            share = 100.0 * m["patch_size"] ** 2 / m["img_size"] ** 2
            table.rows.append(
                Row(
                    keys={"run": run.name},
                    origin=OURS,
                    cells={"patch share (%)": Cell(share, source=run.rel)},
                )
            )
        return table

    monkeypatch.setattr(tables, "TABLES", tables.TABLES + [patch_share_table])
    runs = build_runs(tmp_path / "runs")
    assert main(["report", "--runs", str(runs), "--out", str(tmp_path / "results")]) == 0
    for ext in ("md", "tex", "csv"):
        assert (tmp_path / "results" / "tables" / f"toy_patch_share.{ext}").is_file()
    text = (tmp_path / "results" / "tables" / "toy_patch_share.md").read_text()
    assert "Toy: patch share" in text and "| 1.6 |" in re.sub(
        r"\[([^\]]*)\]\([^)]*\)", r"\1", text
    )  # 4 px of 32 px: 1/64 = 1.56 %
