"""The Snakemake workflow and its DVC wrapper: params validation, the DAG of the paper
configuration, lint, dvc.yaml in step with the DAG, data-layout errors before training,
and (slow) a real tiny end-to-end run that a second invocation leaves alone.

Every test works in a temporary copy of the workflow files, never in the checkout.
"""

from __future__ import annotations

import ast
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import copy_finished_workflow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW_FILES = (
    "Snakefile",
    "workflow",
    "profiles",  # the link to workflow/profiles: Snakemake reads profiles/default on every run
    "params",
    "environment.yml",
    "environment.post-deploy.sh",
    "dvc.yaml",
    ".dvcignore",
)

# the paper's grid, written out by hand (params/paper.yaml)
PAPER_VARIANTS = [
    "folk",
    "mfm",
    "mfm_comrcom",
    "folk_mfm_filters",
    "folk_no_rec",
    "folk_com_only",
    "folk_rcom_only",
    "dino_2view",
]
PAPER_EVALS = ["knn", "linear", "finetune", "fewshot", "segmentation", "robustness"]
PAPER_ABLATIONS = {  # run name -> (ablation, --set items it must carry)
    "folk-portions0.005": ("portions", ["filter.portions=[0.005]"]),
    "folk-portions0.01": ("portions", ["filter.portions=[0.01]"]),
    "folk-portions0.05": ("portions", ["filter.portions=[0.05]"]),
    "folk-portions0.005_0.01_0.05": ("portions", ["filter.portions=[0.005, 0.01, 0.05]"]),
    "folk-p_com0.25": ("p_com", ["filter.p_com=0.25"]),
    "folk-p_com0.75": ("p_com", ["filter.p_com=0.75"]),
    "folk-loss_weights1_0.5": (
        "loss_weights",
        ["pretrain.lambda_rec=1.0", "pretrain.lambda_kd=0.5"],
    ),
    "folk-loss_weights0.5_1": (
        "loss_weights",
        ["pretrain.lambda_rec=0.5", "pretrain.lambda_kd=1.0"],
    ),
    "folk-epochs100": ("epochs", ["pretrain.epochs=100"]),
    "folk-epochs200": ("epochs", ["pretrain.epochs=200"]),
}


# the demo's evaluations (params/demo.yaml): every one for folk and mfm, k-NN and linear for
# the others; the random initialisation gets every evaluation and the raw-pixel baseline
# (workflow.random_init)
DEMO_EVALS = (
    {
        (r, t)
        for r in ("folk", "mfm")
        for t in ("knn", "linear", "fewshot", "finetune", "segmentation", "robustness")
    }
    | {(r, t) for r in ("mfm_comrcom", "dino_2view") for t in ("knn", "linear")}
    | {
        ("random_init", t)
        for t in ("knn", "linear", "fewshot", "finetune", "segmentation", "robustness", "pixels")
    }
    | {
        (f"{r}-seed{s}", t)
        for r in ("folk", "mfm", "dino_2view", "random_init")
        for s in (1, 2)
        for t in ("knn", "linear")
    }
)  # workflow.seeds, workflow.seed_variants, workflow.seed_evals
DEMO_RUNS = {r for r, _ in DEMO_EVALS}


def copy_workflow(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_symlink():
            (dst / name).symlink_to(os.readlink(src))
        elif src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / name)
    return dst


def file_stamps(root: Path) -> dict[str, tuple[int, int]]:
    """(mtime in ns, size) of every file under ``root`` but DVC's and Snakemake's own state."""
    skip = (".dvc/tmp", ".dvc/cache", ".snakemake")
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file()
        and not str(p.relative_to(root)).startswith(skip)
        and "__pycache__" not in p.parts
    }


def changed_files(before: dict, after: dict) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def env(venv_on_path: bool = True) -> dict:
    e = dict(os.environ)
    path = [p for p in e.get("PATH", "").split(os.pathsep) if p and Path(p) != BIN]
    e["PATH"] = os.pathsep.join(([str(BIN)] if venv_on_path else []) + path)
    return e


def run(
    cmd: list[str], cwd: Path, timeout: int = 300, venv_on_path: bool = True
) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, env=env(venv_on_path), capture_output=True, text=True, timeout=timeout
    )


def snakemake(
    cwd: Path, *args: str, timeout: int = 300, venv_on_path: bool = True
) -> subprocess.CompletedProcess:
    return run([str(BIN / "snakemake"), *args], cwd, timeout, venv_on_path)


def write_params(path: Path, data: dict, base: str | None = None) -> Path:
    """A params file: ``base`` (a file of params/) updated by ``data`` (one level deep)."""
    cfg = yaml.safe_load((ROOT / "params" / base).read_text()) if base else {}
    for section, values in data.items():
        if isinstance(values, dict) and isinstance(cfg.get(section), dict):
            cfg[section].update(values)
        else:
            cfg[section] = values
    path.write_text(yaml.safe_dump(cfg))
    return path


def dry_run_jobs(out: str) -> list[dict]:
    """Jobs of `snakemake -n -p` output: rule, wildcards, threads, resources, shell command."""
    jobs, job = [], None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            job = {
                "rule": m.group(1),
                "wildcards": {},
                "input": [],
                "threads": 1,  # printed only when above one
                "resources": {},
                "shell": "",
            }
            jobs.append(job)
        elif job is not None and line.strip().startswith("threads:"):
            job["threads"] = int(line.split(":", 1)[1])
        elif job is not None and line.strip().startswith("resources:"):
            for item in line.split(":", 1)[1].split(", "):
                k, v = item.strip().split("=", 1)
                job["resources"][k] = v
        elif job is not None and line.strip().startswith("wildcards:"):
            for item in line.split(":", 1)[1].split(","):
                k, v = item.strip().split("=", 1)
                job["wildcards"][k] = v
        elif job is not None and line.strip().startswith("input:"):
            job["input"] = [x.strip() for x in line.split(":", 1)[1].split(",")]
        elif job is not None and line.startswith("Shell command:"):
            job["shell"] = line.split(":", 1)[1].strip()
    return jobs


def job_counts(out: str) -> dict[str, int]:
    counts, inside = {}, False
    for line in out.splitlines():
        if line.startswith("job ") and "count" in line:
            inside = True
        elif inside:
            m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if m:
                counts[m.group(1)] = int(m.group(2))
            elif counts:
                break
    return counts


@pytest.fixture(scope="module")
def wf(tmp_path_factory) -> Path:
    """One copy of the workflow for the tests that only read (dry runs, lint)."""
    return copy_workflow(tmp_path_factory.mktemp("wf"))


# ---------------------------------------------------------------- params and schema


@pytest.mark.parametrize(
    "data,key,words",
    [
        ({"pretrain": {"epoch": 3}}, "pretrain.epoch", "unknown key"),
        ({"pretrain": {"epochs": "many"}}, "pretrain.epochs", "must be an integer"),
        ({"filter": {"portions": [0.5, 1.5]}}, "filter.portions", "must be < 1"),
        ({"workflow": {"variants": ["folk", "flok"]}}, "workflow.variants", "flok"),
        ({"workflow": {"ablation_variant": "nope"}}, "workflow.ablation_variant", "nope"),
        ({"workflow": {"evals": ["knn", "nearest"]}}, "workflow.evals", "nearest"),
        (
            {"workflow": {"variants": ["folk", "mfm"], "seed_variants": ["dino_2view"]}},
            "workflow.seed_variants",
            "not in workflow.variants",
        ),
        ({"experiment": {"name": "../elsewhere"}}, "experiment.name", "plain directory name"),
    ],
)
def test_bad_params_fail_the_dry_run_naming_key_and_file(wf, tmp_path, data, key, words):
    bad = write_params(tmp_path / "bad.yaml", data)
    res = snakemake(wf, "-n", "--configfile", str(bad))
    assert res.returncode != 0
    text = res.stdout + res.stderr
    assert key in text and words in text and str(bad) in text, text[-2000:]
    assert "rule pretrain" not in text  # stopped before building any job


def test_folk_cli_names_key_and_file(tmp_path):
    bad = write_params(tmp_path / "bad.yaml", {"model": {"patchsize": 4}})
    res = run([str(BIN / "folk"), "config", "--config", str(bad)], tmp_path)
    assert res.returncode == 2
    assert "model.patchsize" in res.stderr and str(bad) in res.stderr
    assert "model.patch_size" in res.stderr  # the hint


def test_schema_alone_rejects_unknown_key_and_fills_defaults():
    """Snakemake's validate() with the generated schema (what checks the config when the
    folk package is not importable by Snakemake)."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    schema = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")
    cfg = {"pretrain": {"epochs": 5}, "workflow": {"variants": ["folk"]}}
    validate(cfg, schema, set_default=True)
    assert cfg["pretrain"]["epochs"] == 5 and cfg["pretrain"]["batch_size"] == 2048
    assert cfg["workflow"]["threads"] == {"prepare": 1, "pretrain": 2, "eval": 2, "report": 1}
    for bad, word in (
        ({"pretrain": {"epochz": 5}}, "epochz"),
        ({"workflow": {"ablations": {"p_com": [1.5]}}}, "1.5"),
    ):
        with pytest.raises(WorkflowError) as err:
            validate(bad, schema, set_default=True)
        assert word in str(err.value) + str(err.value.__cause__ or "") + repr(err.value.args)


def test_params_files_load_and_say_what_they_are():
    from folk.config import load_config

    demo = load_config(ROOT / "params" / "demo.yaml")
    assert demo["data"]["dataset"] == "fashion_mnist"
    assert "stand-in for" in demo["experiment"]["dataset_note"]
    assert {"folk", "mfm", "mfm_comrcom", "dino_2view"} <= set(demo["workflow"]["variants"])
    assert {"knn", "linear", "fewshot", "finetune", "segmentation"} <= set(
        demo["workflow"]["evals"]
    )
    assert demo["eval"]["segmentation"]["dataset"] == "fashion_mnist_composite"
    paper = load_config(ROOT / "params" / "paper.yaml")
    assert (paper["model"]["arch"], paper["model"]["img_size"]) == ("vit_base_patch16_224", 224)
    assert (paper["pretrain"]["epochs"], paper["pretrain"]["batch_size"]) == (300, 2048)
    assert paper["workflow"]["variants"] == PAPER_VARIANTS
    load_config(ROOT / "params" / "test_tiny.yaml")


def test_resumable_keys_mirror_the_engine():
    """common.smk hashes a run without the keys the engine lets a resumed run change;
    both lists must stay the same."""
    from folk.config import RESUMABLE_CHANGES

    tree = ast.parse((ROOT / "workflow" / "rules" / "common.smk").read_text())
    found = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "RESUMABLE_CHANGES" for t in node.targets)
    ]
    assert found == [tuple(RESUMABLE_CHANGES)]


# ---------------------------------------------------------------- the DAG


def test_paper_dag_resolves_without_data(wf):
    res = snakemake(wf, "-n", "-p", "--configfile", "params/paper.yaml")
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (wf / "data").exists()
    jobs = dry_run_jobs(res.stdout)
    pre = {j["wildcards"]["run"]: j for j in jobs if j["rule"] == "pretrain"}
    assert set(pre) == set(PAPER_VARIANTS) | set(PAPER_ABLATIONS) | {"random_init"}
    evals = {
        (j["wildcards"]["run"], j["wildcards"]["task"]) for j in jobs if j["rule"] == "evaluate"
    }
    # the random initialisation: every evaluation, no raw pixels (workflow.pixel_baseline)
    expected = {(v, t) for v in PAPER_VARIANTS + ["random_init"] for t in PAPER_EVALS}
    expected |= {(r, t) for r in PAPER_ABLATIONS for t in ("knn", "linear")}
    assert evals == expected
    assert job_counts(res.stdout) == {
        "prepare_data": 1,
        "prepare_fewshot": 1,
        "prepare_segmentation": 1,
        "pretrain": 8 + 10 + 1,
        "evaluate": 9 * 6 + 10 * 2,
        "report": 1,
        "all": 1,
        "total": 3 + 19 + 74 + 2,
    }
    assert "--set pretrain.epochs=0 " in pre["random_init"]["shell"]
    # each run gets the same params file plus its own --set items
    for name, (ablation, sets) in PAPER_ABLATIONS.items():
        cmd = pre[name]["shell"]
        assert cmd.startswith("folk pretrain --config params/paper.yaml ")
        assert f"--out runs/paper/{name} " in cmd
        for item in [
            "pretrain.variant=folk",
            f"experiment.run_name={name}",
            f"experiment.ablation={ablation}",
            *sets,
        ]:
            assert f"--set {item} " in cmd or f"--set '{item}' " in cmd, (item, cmd)
    main = pre["mfm"]["shell"]
    assert "--set pretrain.variant=mfm " in main and "--set experiment.ablation= " in main
    seg = [j for j in jobs if j["rule"] == "prepare_segmentation"][0]
    assert seg["shell"].startswith("folk prepare ade20k --config params/paper.yaml")


def test_study_dag_pretrains_on_the_whole_split_and_evaluates_on_2400_labels(wf):
    """params/study.yaml: folk and random_init at 3 seeds, pre-trained on all 60,000
    images; each evaluates k-NN, linear and fine-tuning on eval.train_subset's 2,400."""
    from folk.config import evaluated_subset, load_config

    cfg = load_config(ROOT / "params" / "study.yaml")
    assert (cfg["data"]["train_subset"], cfg["data"]["test_subset"]) == (0, 0)
    assert (evaluated_subset(cfg, "train"), evaluated_subset(cfg, "test")) == (2400, 0)
    res = snakemake(wf, "-n", "--configfile", "params/study.yaml")
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = dry_run_jobs(res.stdout)
    runs = [f"{v}{s}" for v in ("folk", "random_init") for s in ("", "-seed1", "-seed2")]
    assert {j["wildcards"]["run"] for j in jobs if j["rule"] == "pretrain"} == set(runs)
    evals = {
        (j["wildcards"]["run"], j["wildcards"]["task"]) for j in jobs if j["rule"] == "evaluate"
    }
    want = {(r, t) for r in runs for t in ("knn", "linear", "finetune")}
    assert evals == want | {("random_init", "pixels")}


def test_demo_dag_and_stage_targets(wf):
    res = snakemake(wf, "-n", "-p")
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = dry_run_jobs(res.stdout)
    runs = {j["wildcards"]["run"] for j in jobs if j["rule"] == "pretrain"}
    assert runs == DEMO_RUNS and len(runs) == 13
    evals = {
        (j["wildcards"]["run"], j["wildcards"]["task"]) for j in jobs if j["rule"] == "evaluate"
    }
    assert evals == DEMO_EVALS
    # robustness waits for fine-tuning of the same run; few-shot for the lists
    for j in jobs:
        if j["rule"] == "evaluate" and j["wildcards"]["task"] == "robustness":
            assert f"runs/demo/{j['wildcards']['run']}/eval/finetune/metrics.json" in j["input"]
        if j["rule"] == "evaluate" and j["wildcards"]["task"] == "fewshot":
            assert "data/fashion_mnist/fewshot/lists.json" in j["input"]
    # the stage targets that dvc.yaml runs
    prep = {"prepare_data": 1, "prepare_fewshot": 1, "prepare_segmentation": 1}
    for rule, counts in (
        ("prepared", {**prep, "prepared": 1, "total": 4}),
        ("pretrained", {"prepare_data": 1, "pretrain": 13, "pretrained": 1, "total": 15}),
        (
            "evaluated",
            {
                **prep,
                "pretrain": 13,
                "evaluate": len(DEMO_EVALS),
                "evaluated": 1,
                "total": 17 + len(DEMO_EVALS),
            },
        ),
    ):
        sub = snakemake(wf, "-n", rule)
        assert sub.returncode == 0, sub.stderr[-2000:]
        assert job_counts(sub.stdout) == counts, rule


def test_a_fresh_clone_with_committed_results_runs_the_whole_demo(tmp_path):
    """results/demo is in git, the runs behind it are not: a fresh clone must run the whole
    pipeline, not find the committed README up to date."""
    wf = copy_workflow(tmp_path / "wf")
    shutil.copytree(ROOT / "results" / "demo", wf / "results" / "demo")
    res = snakemake(wf, "-n")
    assert res.returncode == 0, res.stderr[-3000:]
    counts = job_counts(res.stdout)
    assert counts["pretrain"] == len(DEMO_RUNS) and counts["report"] == 1, counts
    assert counts["evaluate"] == len(DEMO_EVALS), counts


def test_snakemake_config_items_reach_folk_typed(wf):
    res = snakemake(wf, "-n", "-p", "--config", 'pretrain={"epochs": 3}', "experiment={name: cli}")
    assert res.returncode == 0, res.stderr[-3000:]
    pre = [j for j in dry_run_jobs(res.stdout) if j["rule"] == "pretrain"]
    assert len(pre) == 13  # the four variants and the random initialisation; 3 seeds of three
    for j in pre:
        assert "--set pretrain.epochs=3 " in j["shell"]
        if j["wildcards"]["run"] == "random_init":  # its own epochs=0 comes last and wins
            assert j["shell"].index("pretrain.epochs=0") > j["shell"].index("pretrain.epochs=3")
        assert "--set experiment.name=cli " in j["shell"]
        assert f"--out runs/cli/{j['wildcards']['run']} " in j["shell"]
    bad = snakemake(wf, "-n", "--config", 'pretrain={"epochs": "x"}')
    assert bad.returncode != 0 and "--set pretrain.epochs" in bad.stdout + bad.stderr


def test_params_words_that_yaml_1_1_reads_as_booleans_reach_folk_as_words(wf, tmp_path):
    """`compile: off` unquoted: Snakemake's own YAML reading makes it False, which the
    schema's choices (auto, on, off) refuse; the workflow reads the file as folk does."""
    text = (ROOT / "params" / "demo.yaml").read_text()
    assert "\naugment:\n" in text
    params = tmp_path / "words.yaml"
    params.write_text(text.replace("\naugment:\n", "\naugment:\n  compile: off\n", 1))
    res = snakemake(wf, "-n", "-p", "--configfile", str(params))
    assert res.returncode == 0, res.stderr[-3000:]


def test_submitit_launch_makes_pretraining_a_waiting_local_job(wf, tmp_path):
    threads = {"prepare": 1, "pretrain": 2, "eval": 2, "report": 1}
    params = write_params(
        tmp_path / "launch.yaml",
        {"launch": {"executor": "slurm"}, "workflow": {"threads": threads}},
        base="demo.yaml",
    )
    res = snakemake(wf, "-n", "-p", "--cores", "2", "--configfile", str(params))
    assert res.returncode == 0, res.stderr[-3000:]
    pre = [j for j in dry_run_jobs(res.stdout) if j["rule"] == "pretrain"]
    assert len(pre) == 13  # the four variants and the random initialisation; 3 seeds of three
    for j in pre:
        assert j["shell"].startswith(f"folk launch --wait --config {params} ")
    # one waiting thread per run (threads are printed only when above one)
    blocks = res.stdout.split("rule pretrain:")[1:]
    assert blocks and not any("threads:" in b.split("\n\n")[0] for b in blocks)
    ev = res.stdout.split("rule evaluate:")[1].split("\n\n")[0]
    assert "threads: 2" in ev


def test_jobs_get_the_slurm_resources_only_when_they_go_to_slurm(wf):
    """A run on one machine gives its jobs their threads and none of the params file's cluster
    resources (Snakemake's scheduler would take a cluster node's 64 GB for what the machine
    needs); the same dry run for the slurm executor lists them as SLURM is asked for them."""
    from folk.config import load_config
    from folk.launch.resources import rule_resources

    sets = {"slurm": {"partition": "gpu", "account": "proj"}}
    sets["workflow"] = {"threads": {"pretrain": 2, "eval": 2}}
    given = ["--configfile", "params/demo.yaml", "--config"]
    given += [f"{k}={json.dumps(v)}" for k, v in sets.items()]
    cfg = load_config(ROOT / "params" / "demo.yaml", ["slurm.partition=gpu", "slurm.account=proj"])
    listed = {}
    for executor in ("local", "slurm"):
        res = snakemake(
            wf, "-n", "-p", "--cores", "2", "--executor", executor, "--jobs", "4", *given
        )
        assert res.returncode == 0, res.stderr[-3000:]
        jobs = dry_run_jobs(res.stdout)
        listed[executor] = {(j["rule"], *sorted(j["wildcards"].items())): j for j in jobs}
    local, slurm = listed["local"], listed["slurm"]
    assert local.keys() == slurm.keys()
    # the benchmarks run a pre-training step: pre-training's threads and resources
    kinds = {
        "pretrain": "pretrain",
        "evaluate": "eval",
        "bench": "pretrain",
        "bench_data": "pretrain",
    }
    for name, job in local.items():
        assert set(job["resources"]) <= {"tmpdir"}, job
        assert job["threads"] == slurm[name]["threads"] == (2 if job["rule"] in kinds else 1)
        kind = kinds.get(job["rule"])
        want = {k: str(v) for k, v in rule_resources(cfg, kind).items()} if kind else {}
        got = slurm[name]["resources"]
        assert {k: got.get(k) for k in want} == want, slurm[name]
    evals = [j["resources"] for j in slurm.values() if j["rule"] == "evaluate"]
    assert evals and all(r["mem_mb"] == "65536" and r["slurm_partition"] == "gpu" for r in evals)


@pytest.mark.parametrize("params", ["params/demo.yaml", "params/paper.yaml"])
def test_lint_is_clean(wf, params):
    res = snakemake(wf, "--lint", "--configfile", params)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    text = res.stdout + res.stderr
    assert "Congratulations, your workflow is in a good condition!" in text
    assert "Lints for" not in text


# ---------------------------------------------------------------- DVC


def test_dvc_yaml_is_the_generated_one(wf):
    res = run([sys.executable, "workflow/scripts/dvc_yaml.py", "--check"], wf)
    assert res.returncode == 0, res.stderr[-3000:]


def test_dvc_stages_cover_the_dags_final_outputs(wf):
    """Independently of the generator: the files the dry run plans, rule by rule, are the
    files the DVC stages track, and each stage runs Snakemake on its stage target."""
    res = snakemake(wf, "-n", "--configfile", "params/demo.yaml")
    assert res.returncode == 0
    planned: dict[str, set[str]] = {}
    rule = None
    for line in res.stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            rule = m.group(1)
        elif rule and line.strip().startswith("output:"):
            planned.setdefault(rule, set()).update(
                p.strip() for p in line.split(":", 1)[1].split(",")
            )
    dvc = yaml.safe_load((wf / "dvc.yaml").read_text())["stages"]

    def paths(stage, kind):
        return {next(iter(e)) if isinstance(e, dict) else e for e in dvc[stage].get(kind, [])}

    assert paths("pretrain", "outs") == planned["pretrain"]
    assert paths("evaluate", "outs") == planned["evaluate"]
    assert {f"runs/demo/{r}/eval/{t}/metrics.json" for r, t in DEMO_EVALS} == paths(
        "evaluate", "outs"
    )
    prepared = (
        planned["prepare_data"] | planned["prepare_fewshot"] | planned["prepare_segmentation"]
    )
    outs = paths("prepare", "outs")
    assert all(any(p == o or p.startswith(o + "/") for o in outs) for p in prepared)
    # the report's files in git: DVC's metrics file and every other output, each covered
    reported = planned["report"] | planned["bench"] | planned["bench_data"]
    assert paths("report", "metrics") == {"results/demo/metrics.json"}
    tracked = paths("report", "outs") | paths("report", "metrics")
    assert all(any(p == o or p.startswith(o + "/") for o in tracked) for p in reported)
    assert {"results/demo/tables", "results/demo/figures"} <= tracked
    # each DVC plot overlays curve files the report writes, one per trained main-grid run
    for definition in yaml.safe_load((wf / "dvc.yaml").read_text())["plots"]:
        ((plot_id, spec),) = definition.items()
        assert set(spec["y"]) <= planned["report"], plot_id
        assert "results/demo/plots/train/folk.csv" in spec["y"] or plot_id == "knn_top1"
    for stage, target in (
        ("prepare", "prepared"),
        ("pretrain", "pretrained"),
        ("evaluate", "evaluated"),
        ("report", "all"),
    ):
        assert dvc[stage]["cmd"] == f"snakemake {target} --cores all --configfile params/demo.yaml"
    backbones = [e for e in dvc["pretrain"]["outs"] if next(iter(e)).endswith("backbone.pt")]
    assert backbones and all(e[next(iter(e))].get("cache", True) for e in backbones)
    demo = yaml.safe_load((ROOT / "params" / "demo.yaml").read_text())
    for stage in dvc.values():  # DVC refuses params keys the file lacks
        for entry in stage.get("params", []):
            for key in entry["params/demo.yaml"]:
                node = demo
                for part in key.split("."):
                    node = node[part]


def test_dvc_default_remote_is_workflow_remote():
    from folk.config import defaults

    cp = configparser.ConfigParser()
    cp.read(ROOT / ".dvc" / "config")
    name = cp["core"]["remote"]
    url = cp[f"'remote \"{name}\"'"]["url"]
    resolved = os.path.normpath(os.path.join(ROOT / ".dvc", url))
    assert resolved == str(ROOT / defaults()["workflow"]["remote"])
    assert cp["core"].get("analytics") == "false"


# ---------------------------------------------------------------- data-layout errors


def _jpeg(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (120, 30, 200)).save(path, "JPEG")


def test_missing_imagenet_split_stops_before_training(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    source = tmp_path / "imagenet"
    for c in ("n01440764", "n01443537"):
        _jpeg(source / "train" / c / "a.JPEG")  # no val/ split
    params = write_params(
        wf / "params" / "bad_imagenet.yaml",
        {
            "experiment": {"name": "layout"},
            "data": {
                "dataset": "imagenet",
                "root": "data/imagenet",
                "source": str(source),
                "num_classes": 2,
                "num_workers": 0,
            },
            "workflow": {
                "variants": ["folk"],
                "evals": ["knn"],
                "ablations": {"portions": [], "p_com": [], "loss_weights": [], "epochs": []},
            },
        },
    )
    # the venv is not on PATH: the jobs still find the folk installed beside Snakemake
    res = snakemake(
        wf, "--cores", "1", "--configfile", str(params), timeout=300, venv_on_path=False
    )
    assert res.returncode != 0
    text = res.stdout + res.stderr
    assert "Error in rule prepare_data" in text
    # the job's output went to its log only; Snakemake shows that log, read through the
    # link logs/.../data.log -> data.log.all, line for line
    link = wf / "logs" / "layout" / "prepare" / "data.log"
    assert link.is_symlink() and os.readlink(link) == "data.log.all"
    log = link.read_text()
    assert "missing split" in log and "val" in log
    assert "Logfile logs/layout/prepare/data.log:" in text, text[-3000:]
    shown = text.splitlines()
    assert all(line in shown for line in log.splitlines()), (log, text[-3000:])
    assert not (wf / "runs").exists() and "rule pretrain" not in text


# ---------------------------------------------------------------- end to end (slow)

TINY_RUNS = {
    "folk": ["knn", "linear", "fewshot", "finetune", "segmentation", "robustness"],
    "mfm": ["knn", "linear", "fewshot", "finetune", "segmentation", "robustness"],
    "folk-p_com0.25": ["knn"],
    "random_init": ["knn", "linear", "fewshot", "finetune", "segmentation", "robustness", "pixels"],
}


@pytest.mark.slow
def test_tiny_end_to_end_then_nothing_then_only_what_changed(tiny_workflow_run, tmp_path):
    wf = copy_finished_workflow(tiny_workflow_run, tmp_path / "wf")
    for name, tasks in TINY_RUNS.items():
        rd = wf / "runs" / "test_tiny" / name
        cfg = yaml.safe_load((rd / "config.yaml").read_text())
        assert cfg["experiment"]["run_name"] == name
        assert cfg["experiment"]["ablation"] == ("p_com" if "-" in name else "")
        assert cfg["pretrain"]["variant"] == (
            "folk" if name == "random_init" else name.split("-")[0]
        )
        if name != "random_init":  # a run of 0 iterations writes no checkpoint
            assert (rd / "checkpoints" / "last.pt").is_file()  # kept, never an output
        for task in tasks:
            m = json.loads((rd / "eval" / task / "metrics.json").read_text())
            assert (m["schema"], m["task"], m["run"]) == ("folk.eval/1", task, name)
    assert (
        yaml.safe_load((wf / "runs/test_tiny/folk-p_com0.25/config.yaml").read_text())["filter"][
            "p_com"
        ]
        == 0.25
    )
    results = wf / "results" / "test_tiny"
    assert (results / "README.md").is_file()
    assert list((results / "tables").glob("*.md"))
    assert list((results / "figures").glob("*.png"))
    summary = json.loads((results / "metrics.json").read_text())
    knn_rows = summary["knn_linear"]
    assert any(label.startswith("random init") for label in knn_rows), knn_rows
    assert json.loads((results / "provenance.json").read_text())["runs"] == len(TINY_RUNS)
    # curves of the trained main-grid runs only (not the ablation, not the random init)
    assert sorted(p.name for p in (results / "plots" / "train").glob("*.csv")) == [
        "folk.csv",
        "mfm.csv",
    ]
    header = (results / "plots" / "train" / "folk.csv").read_text().splitlines()[0]
    assert "kd_teacher_entropy" in header and "loss_rec" in header
    for name in ("prepare/data", "test_tiny/folk/pretrain", "test_tiny/mfm/eval_knn"):
        assert list((wf / "benchmarks").glob(f"**/{Path(name).name}.tsv"))

    again = snakemake(wf, "--cores", "2", "--configfile", "params/test_tiny.yaml")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # a report output that the finished work lacks (one a newer version declares) brings
    # the report back, even though the README it used to end with is there
    (results / "runs.html").rename(tmp_path / "runs.html")
    plan = snakemake(wf, "-n", "--configfile", "params/test_tiny.yaml")
    assert job_counts(plan.stdout) == {"report": 1, "all": 1, "total": 2}, plan.stdout
    (tmp_path / "runs.html").rename(results / "runs.html")

    # a changed k-NN setting reruns the k-NN evaluations (the raw-pixel baseline uses the
    # same protocol) and the report only
    params = wf / "params" / "test_tiny.yaml"
    cfg = yaml.safe_load(params.read_text())
    cfg["eval"]["knn"]["k"] = [5, 20]
    params.write_text(yaml.safe_dump(cfg))
    plan = snakemake(wf, "-n", "--configfile", "params/test_tiny.yaml")
    assert plan.returncode == 0
    assert job_counts(plan.stdout) == {"evaluate": 5, "report": 1, "all": 1, "total": 7}
    assert {
        (j["wildcards"]["run"], j["wildcards"]["task"])
        for j in dry_run_jobs(plan.stdout)
        if j["rule"] == "evaluate"
    } == {(r, "knn") for r in TINY_RUNS} | {("random_init", "pixels")}
    # fewer test images for the evaluations (eval.test_subset) rerun every evaluation but
    # segmentation's (its own data), and no pre-training
    cfg["eval"]["test_subset"] = 80
    params.write_text(yaml.safe_dump(cfg))
    plan = snakemake(wf, "-n", "--configfile", "params/test_tiny.yaml")
    assert plan.returncode == 0, plan.stderr[-3000:]
    rerun = {
        (j["wildcards"]["run"], j["wildcards"]["task"])
        for j in dry_run_jobs(plan.stdout)
        if j["rule"] == "evaluate"
    }
    assert rerun == {(r, t) for r, tasks in TINY_RUNS.items() for t in tasks if t != "segmentation"}
    assert "pretrain" not in job_counts(plan.stdout)
    del cfg["eval"]["test_subset"]
    # one more ablation value adds that run (and its evaluation) only
    cfg["eval"]["knn"]["k"] = [5, 10]
    cfg["workflow"]["ablations"]["p_com"] = [0.25, 0.75]
    params.write_text(yaml.safe_dump(cfg))
    plan = snakemake(wf, "-n", "--configfile", "params/test_tiny.yaml")
    assert job_counts(plan.stdout) == {
        "pretrain": 1,
        "evaluate": 1,
        "report": 1,
        "all": 1,
        "total": 4,
    }
    assert "runs/test_tiny/folk-p_com0.75/DONE.json" in plan.stdout
    cfg["workflow"]["ablations"]["p_com"] = [0.25]
    params.write_text(yaml.safe_dump(cfg))

    # DVC runs the same DAG: nothing to redo, then data and backbones go to the remote
    shutil.copytree(ROOT / "folk", wf / "folk", ignore=shutil.ignore_patterns("__pycache__"))
    gen = run(
        [sys.executable, "workflow/scripts/dvc_yaml.py", "--params", "params/test_tiny.yaml"], wf
    )
    assert gen.returncode == 0, gen.stderr
    (wf / ".dvc").mkdir()
    repo_config = (ROOT / ".dvc" / "config").read_text()  # its cache type among others
    (wf / ".dvc" / "config").write_text(
        repo_config.replace("[core]\n", "[core]\n    no_scm = true\n")
    )
    dvc = str(BIN / "dvc")
    before = file_stamps(wf)
    # a second orchestrator over finished work, without a lock: DVC runs every stage, and
    # each Snakemake run finds nothing to do (DVC's caching must not make the backbones
    # look newer than their evaluations)
    repro = run([dvc, "repro"], wf, timeout=900)
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    assert "Nothing to be done" in repro.stdout + repro.stderr
    assert changed_files(before, file_stamps(wf)) <= {"dvc.lock"}
    # what scripts/demo.sh does after Snakemake: the lock written from the finished work;
    # then `dvc repro` runs nothing and changes nothing
    (wf / "dvc.lock").unlink()
    commit = run([dvc, "commit", "--force", "--quiet"], wf, timeout=300)
    assert commit.returncode == 0, commit.stderr[-3000:]
    before = file_stamps(wf)
    repro = run([dvc, "repro"], wf, timeout=300)
    assert repro.returncode == 0, repro.stderr[-3000:]
    assert "Data and pipelines are up to date" in repro.stdout, repro.stdout
    assert "Running stage" not in repro.stdout
    assert changed_files(before, file_stamps(wf)) == set()
    push = run([dvc, "push"], wf, timeout=300)
    assert push.returncode == 0, push.stderr[-3000:]
    lock = yaml.safe_load((wf / "dvc.lock").read_text())["stages"]
    pushed = {
        o["path"]: o["md5"]
        for st in ("prepare", "pretrain")
        for o in lock[st]["outs"]
        if "md5" in o
    }
    backbones = [p for p in pushed if p.endswith("backbone.pt")]
    assert len(backbones) == 4 and "data/fashion_mnist" in pushed  # with random_init
    for path in backbones:  # the remote holds each final checkpoint's bytes
        md5 = pushed[path]
        stored = wf / "data" / "dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]
        assert stored.read_bytes() == (wf / path).read_bytes()
    shown = run([dvc, "metrics", "show", "--json"], wf)
    assert shown.returncode == 0, shown.stderr
    # DVC 3.67 names the workspace "" when no revision is asked for, older ones "workspace"
    by_rev = json.loads(shown.stdout)
    metrics = (by_rev.get("workspace") or by_rev[""])["data"]
    assert metrics["results/test_tiny/metrics.json"]["data"] == summary
    status = run([dvc, "status"], wf)
    assert "up to date" in status.stdout, status.stdout
    plots = run([dvc, "plots", "show", "--json"], wf)
    assert plots.returncode == 0 and "failed" not in plots.stdout + plots.stderr, plots.stderr
    drawn = json.loads(plots.stdout)["data"]
    for definition in yaml.safe_load((wf / "dvc.yaml").read_text())["plots"]:
        (plot_id,) = definition
        values = drawn[plot_id][0]["content"]["data"]["values"]
        assert values, plot_id  # every chart has points: the curves of folk and mfm


def test_more_seeds_repeat_the_main_grid(wf, tmp_path):
    params = write_params(
        tmp_path / "seeds.yaml",
        {"workflow": {"seeds": [1, 2], "seed_variants": []}},
        base="demo.yaml",
    )
    res = snakemake(wf, "-n", "-p", "--configfile", str(params))
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = dry_run_jobs(res.stdout)
    pre = {j["wildcards"]["run"]: j["shell"] for j in jobs if j["rule"] == "pretrain"}
    base = {"folk", "mfm", "mfm_comrcom", "dino_2view", "random_init"}
    assert set(pre) == base | {f"{r}-seed{s}" for r in base for s in (1, 2)}
    assert "--set experiment.seed=2 " in pre["mfm-seed2"]
    evals = {
        (j["wildcards"]["run"], j["wildcards"]["task"]) for j in jobs if j["rule"] == "evaluate"
    }
    assert {t for r, t in evals if r == "folk-seed1"} == {"knn", "linear"}
    bad = write_params(tmp_path / "bad.yaml", {"workflow": {"seeds": [0]}}, base="demo.yaml")
    res = snakemake(wf, "-n", "--configfile", str(bad))
    assert res.returncode != 0 and "workflow.seeds" in res.stdout + res.stderr


def test_every_rule_command_line_parses_as_its_folk_command(wf, tmp_path):
    """Each job's `folk ...` line, as the dry run prints it, is one the command's own parser
    accepts (a rule that joined a list with the wrong separator failed only when run)."""
    import argparse
    import importlib
    import shlex

    from folk.cli import COMMANDS

    params = write_params(tmp_path / "bench.yaml", {"workflow": {"bench": True}}, base="demo.yaml")
    res = snakemake(wf, "-n", "-p", "--configfile", str(params))
    assert res.returncode == 0, res.stderr[-3000:]
    seen = set()
    for job in dry_run_jobs(res.stdout):
        if job.get("shell") in (None, "", "None"):  # rule all and the stage targets
            continue
        words = shlex.split(job["shell"].split(" >> ")[0])
        assert words[0] == "folk", job["shell"]
        name = words[1]
        parser = argparse.ArgumentParser(prog=f"folk {name}", exit_on_error=False)
        importlib.import_module(COMMANDS[name][0]).add_arguments(parser)
        try:
            parser.parse_args(words[2:])
        except (argparse.ArgumentError, SystemExit) as exc:
            raise AssertionError(f"rule {job['rule']}: {job['shell']}: {exc}") from None
        seen.add(job["rule"])
    assert {"prepare_data", "pretrain", "evaluate", "bench", "bench_data", "report"} <= seen
