"""params/gpu-mini.yaml, the one-GPU mini-reproduction: its DAG resolves, and its tiny CPU
form (the same file with sizes cut to seconds) pre-trains every variant of its grid, writes
the random initialisation and evaluates them."""

from __future__ import annotations

import json

import yaml

from conftest import REPO
from test_workflow import copy_workflow, dry_run_jobs, snakemake

from folk.cli import main
from folk.config import load_config

PARAMS = REPO / "params" / "gpu-mini.yaml"
TINY = [
    "data.train_subset=64",
    "data.test_subset=40",
    "data.num_workers=0",
    "model.depth=1",
    "model.embed_dim=32",
    "model.num_heads=2",
    "model.patch_size=8",
    "model.head_out_dim=64",
    "model.head_hidden_dim=32",
    "model.head_bottleneck_dim=16",
    "pretrain.epochs=1",
    "pretrain.batch_size=16",
    "pretrain.knn_every=1",
    "pretrain.knn_train_images=64",
    "pretrain.knn_test_images=40",
    "eval.batch_size=32",
    "eval.linear.epochs=2",
    "eval.fewshot.shots=[1, 2]",
    "eval.fewshot.seeds=[0]",
]


def test_gpu_mini_is_the_full_training_set_on_one_gpu():
    cfg = load_config(PARAMS)
    assert cfg["data"]["dataset"] == "fashion_mnist" and cfg["data"]["train_subset"] == 0
    assert set(cfg["workflow"]["variants"]) == {"folk", "mfm", "mfm_comrcom", "dino_2view"}
    assert cfg["workflow"]["random_init"] and cfg["slurm"]["gpus_per_node"] == 1
    assert "ESTIMATE" in PARAMS.read_text()  # until a GPU has measured it


def test_gpu_mini_dag(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    res = snakemake(wf, "-n", "-p", "--cores", "16", "--configfile", "params/gpu-mini.yaml")
    assert res.returncode == 0, res.stderr[-2000:]
    jobs = dry_run_jobs(res.stdout)
    runs = {j["wildcards"]["run"] for j in jobs if j["rule"] == "pretrain"}
    assert runs == {"folk", "mfm", "mfm_comrcom", "dino_2view", "random_init"}
    evals = {
        (j["wildcards"]["run"], j["wildcards"]["task"]) for j in jobs if j["rule"] == "evaluate"
    }
    assert ("random_init", "pixels") in evals and ("folk", "fewshot") in evals


def test_gpu_mini_tiny_cpu_form(tmp_path, fashion_root, one_thread):
    sets = [f"data.root={fashion_root}"] + TINY
    argv = ["--config", str(PARAMS)] + [a for s in sets for a in ("--set", s)]
    for variant in ("folk", "mfm", "mfm_comrcom", "dino_2view"):
        out = tmp_path / variant
        assert (
            main(["pretrain", *argv, "--set", f"pretrain.variant={variant}", "--out", str(out)])
            == 0
        )
        done = json.loads((out / "DONE.json").read_text())
        assert done["iterations"] == 4 and done["final_loss"] is not None
        saved = yaml.safe_load((out / "config.yaml").read_text())
        assert saved["augment"]["preset"] == {
            "mfm": "mfm",
            "mfm_comrcom": "mfm",
            "dino_2view": "dino",
        }.get(variant, "folk")
    init = tmp_path / "random_init"
    assert main(["pretrain", *argv, "--set", "pretrain.epochs=0", "--out", str(init)]) == 0
    for task in ("knn", "linear", "pixels"):
        assert main(["eval", task, "--run", str(init)]) == 0
        assert (init / "eval" / task / "metrics.json").is_file()
    assert main(["eval", "knn", "--run", str(tmp_path / "folk")]) == 0
