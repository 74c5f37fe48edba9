"""`folk launch` and `snakemake --profile slurm` on a real one-node SLURM cluster.

Run by tests/slurm/run_slurm_tests.sh, which starts the cluster (cluster.sh), sets
FOLK_SLURM_TESTS=1 and always stops the daemons; skipped otherwise. CPU only: every job
asks for zero GPUs (slurm.cpu_only=true), one CPU each, so that two run side by side on a
2-core machine. About 5 minutes in all.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, tiny_overrides

pytestmark = pytest.mark.slurm

# 25 epochs x 20 iterations: about 60-90 s of training on one CPU thread, longer than
# what SLURM lets one attempt run with a 1-minute limit and the warning 5 s before it
# (slurmctld checks time limits every ~30 s: the warning lands 25-55 s into the job)
LONG = [
    "data.train_subset=640",
    "pretrain.epochs=25",
    "pretrain.batch_size=32",
    "pretrain.checkpoint_every=10",
    "pretrain.log_every=10",
    "model.depth=2",
    "model.embed_dim=64",
]
ON_CLUSTER = [
    "launch.executor=slurm",
    "launch.poll_s=2",
    "slurm.cpu_only=true",
    "slurm.gpus_per_node=0",
    "slurm.eval_gpus=0",
    "slurm.cpus_per_gpu=1",
    "slurm.mem_gb=0",
    "slurm.eval_mem_gb=0",
    "slurm.signal_delay_s=5",
    "slurm.max_requeues=5",
]


def _sh(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster() -> None:
    if os.environ.get("FOLK_SLURM_TESTS") != "1":
        pytest.skip("needs the local SLURM cluster: bash tests/slurm/run_slurm_tests.sh")
    if shutil.which("sinfo") is None:
        pytest.skip("SLURM is not installed")
    state = _sh("sinfo", "-h", "-o", "%T").stdout.split()
    if not any(s.startswith(("idle", "mixed", "allocated")) for s in state):
        pytest.skip(f"no SLURM node up (sinfo: {state})")


def _cfg(fashion_root: Path, *extra: str) -> dict:
    from folk.config import load_config

    return load_config(None, tiny_overrides(fashion_root) + LONG + ON_CLUSTER + list(extra))


def _job_state(job_id: str) -> str:
    out = _sh("squeue", "-h", "-j", job_id, "-t", "all", "-o", "%T").stdout.split()
    return out[0] if out else ""


def _wait_until(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _logs(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob("*_0_log.*")))


def _iteration(ckpt: Path) -> int:
    if not ckpt.is_file():
        return 0
    try:
        return int(torch.load(ckpt, weights_only=True)["iteration"])
    except Exception:  # noqa: BLE001  (replaced while read: the next poll sees it)
        return 0


def _assert_same_weights(a: Path, b: Path) -> None:
    for name in ("backbone.pt", "student_backbone.pt"):
        wa = torch.load(a / name, weights_only=True)
        wb = torch.load(b / name, weights_only=True)
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), f"{name}: {key} differs"


# the time-limit test trains twice as long: on an idle machine the 500 iterations of LONG
# took 36 s at 14 it/s and ended before the warning; 1,000 outlast one attempt there, and
# the requeues allowed cover a machine three times slower
TIME_LIMIT_RUN = ["pretrain.epochs=50", "slurm.max_requeues=10"]
TIME_LIMIT_ITERATIONS = 50 * 20


def test_time_limit_requeues_and_resumes_to_the_same_weights(cluster, fashion_root, tmp_path):
    from folk.engine.pretrain import pretrain
    from folk.launch.submit import launch, read_record

    cfg = _cfg(fashion_root, "slurm.timeout_min=1", *TIME_LIMIT_RUN)
    run = tmp_path / "on_slurm"
    submitted = launch(cfg, run)  # no --wait: the reference trains meanwhile
    assert submitted["status"] == "submitted"
    job_id = submitted["job_id"]

    # the uninterrupted reference, in this process, with the job's thread count
    torch.set_num_threads(1)
    pretrain(_cfg(fashion_root, "launch.executor=none", *TIME_LIMIT_RUN), tmp_path / "straight")

    # a second `folk launch` of the same run attaches to the queued/running job
    finished = launch(cfg, run, wait=True)
    if finished["status"] == "done":  # it ended before we asked: read what it did
        assert read_record(run)["job_id"] == job_id
    else:
        assert finished["job_id"] == job_id
        assert finished["result"]["iterations"] == TIME_LIMIT_ITERATIONS
    folder = Path(read_record(run)["folder"])
    log = _logs(folder)
    assert (
        "Caught signal SIGUSR2" in log and "timed-out" in log
    ), f"SLURM never warned the job: the training was shorter than one attempt\n{log[-3000:]}"
    requeues = re.findall(rf"Requeued job {job_id} \((\d+) remaining timeouts\)", log)
    assert requeues, log[-3000:]
    resumed = [int(i) for i in re.findall(r"resumed from \S+ at iteration (\d+)", log)]
    assert len(resumed) == len(requeues)
    assert all(0 < i < TIME_LIMIT_ITERATIONS for i in resumed)
    assert resumed == sorted(resumed)
    assert (run / "DONE.json").is_file()
    _assert_same_weights(tmp_path / "straight", run)


def test_scancel_leaves_a_consistent_checkpoint_and_resubmission_resumes(
    cluster, fashion_root, tmp_path
):
    from folk.launch.submit import launch, read_record
    from folk.models import build_student_teacher

    cfg = _cfg(fashion_root, "slurm.timeout_min=10")
    run = tmp_path / "run"
    ckpt = run / "checkpoints/last.pt"
    first = launch(cfg, run)
    _wait_until(lambda: _iteration(ckpt) >= 10, 120, "a first checkpoint")
    assert _sh("scancel", first["job_id"]).returncode == 0
    _wait_until(lambda: _job_state(first["job_id"]) == "CANCELLED", 60, "the cancellation")

    state = torch.load(ckpt, weights_only=True)
    stopped_at = int(state["iteration"])
    assert 10 <= stopped_at < 500
    student, teacher = build_student_teacher(cfg)
    student.load_state_dict(state["student"])  # every tensor there, with its shape
    teacher.load_state_dict(state["teacher"])
    log = _logs(Path(first["folder"]))
    assert "Bypassing signal SIGTERM" in log  # the engine checkpointed, then handed it on
    assert "stopped by signal 15" in log
    assert not (run / "DONE.json").exists()

    second = launch(cfg, run)  # the same command again
    assert second["job_id"] != first["job_id"]
    assert Path(second["folder"]) != Path(first["folder"])
    assert read_record(run)["job_id"] == second["job_id"]
    _wait_until(
        lambda: f"at iteration {stopped_at}" in _logs(Path(second["folder"])),
        120,
        "the resubmitted job to resume",
    )
    _wait_until(lambda: _iteration(ckpt) > stopped_at, 120, "training to go on")
    _sh("scancel", second["job_id"])
    _wait_until(lambda: _job_state(second["job_id"]) == "CANCELLED", 60, "the cancellation")


def _cluster_gpus() -> int:
    out = _sh("sinfo", "-h", "-o", "%G").stdout
    found = re.search(r"gpu:(\d+)", out)
    return int(found.group(1)) if found else 0


def test_ddp_one_task_per_gpu_requeued_together(cluster, fashion_root, tmp_path):
    """slurm.gpus_per_node=2 on the cluster's two device-less GPUs (cluster.sh): two tasks,
    torch.distributed (gloo, CPU) from submitit's job environment. The warning signal
    (sent here with scancel, as SLURM sends it before a time limit or a pre-emption)
    reaches both ranks; rank 0 checkpoints and requeues the job, and both ranks resume."""
    from folk.launch.submit import launch

    if _cluster_gpus() < 2:
        pytest.skip("the cluster declares fewer than 2 GPUs (FOLK_SLURM_FAKE_GPUS)")
    cfg = _cfg(
        fashion_root,
        "slurm.cpu_only=false",
        "slurm.gpus_per_node=2",
        "slurm.eval_gpus=1",
        "slurm.timeout_min=10",
        "model.depth=1",
        "model.embed_dim=32",
        "pretrain.epochs=10",
    )  # 200 iterations
    run = tmp_path / "ddp"
    out = launch(cfg, run)
    _wait_until(lambda: _iteration(run / "checkpoints/last.pt") >= 10, 120, "a checkpoint")
    assert _sh("scancel", "--signal=USR2", out["job_id"]).returncode == 0
    result = launch(cfg, run, wait=True)["result"]  # attaches to the requeued job
    done = json.loads((run / "DONE.json").read_text())
    assert done["world_size"] == 2 and done["iterations"] == 200
    assert result["world_size"] == 2
    folder = Path(out["folder"])
    rank0 = "\n".join(p.read_text() for p in folder.glob("*_0_log.*"))
    rank1 = "\n".join(p.read_text() for p in folder.glob("*_1_log.*"))
    assert "global_rank=0(2)" in rank0 and "global_rank=1(2)" in rank1
    assert f"Requeued job {out['job_id']}" in rank0, rank0[-3000:]
    assert "Caught signal SIGUSR2" in rank1 and "Requeued job" not in rank1
    assert re.search(r"resumed from \S+ at iteration [1-9]", rank0)


def test_plugin_gpu_job_runs_one_process(cluster, tmp_path):
    """The executor plugin's GPU pitfall: `gpu=N` with a `tasks` resource becomes
    --ntasks-per-gpu and some plugin versions start N copies of the command. The resources
    folk gives a GPU evaluation (folk.launch.resources) must run it once, with N GPUs."""
    from folk.config import load_config
    from folk.launch.resources import rule_resources

    if _cluster_gpus() < 2:
        pytest.skip("the cluster declares fewer than 2 GPUs (FOLK_SLURM_FAKE_GPUS)")
    resources = rule_resources(
        load_config(
            None,
            [
                "slurm.eval_gpus=2",
                "slurm.cpus_per_gpu=1",
                "slurm.eval_mem_gb=0",
                "slurm.eval_runtime_min=5",
            ],
        ),
        "eval",
    )
    assert resources["gpu"] == 2
    (tmp_path / "Snakefile").write_text(
        "rule gpu_job:\n"
        "    output: 'copies.txt'\n"
        f"    resources: **{resources!r}\n"
        "    shell: 'echo task=$SLURM_PROCID gpus=$SLURM_GPUS_ON_NODE >> {output}; sleep 2'\n"
    )
    snakemake = str(Path(sys.executable).parent / "snakemake")
    done = subprocess.run(
        [
            "timeout",
            "-k",
            "10",
            "120",
            snakemake,
            "--executor",
            "slurm",
            "--jobs",
            "1",
            "--slurm-status-command",
            "squeue",
            "--slurm-init-seconds-before-status-checks",
            "2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert (tmp_path / "copies.txt").read_text().splitlines() == ["task=0 gpus=2"]


def test_bad_options_fail_before_submission(cluster, fashion_root, tmp_path):
    from folk.errors import ConfigError
    from folk.launch.submit import launch

    def jobs() -> int:
        return len(_sh("squeue", "-h", "-t", "all").stdout.splitlines())

    before = jobs()
    with pytest.raises(ConfigError, match=r"slurm\.partition.*'gpu-h100'.*debug"):
        launch(_cfg(fashion_root, "slurm.partition=gpu-h100"), tmp_path / "a", wait=True)
    with pytest.raises(ConfigError, match=r"slurm\.gpus_per_node.*no GPU"):
        launch(
            _cfg(fashion_root, "slurm.cpu_only=false", "slurm.eval_gpus=1"),
            tmp_path / "b",
            wait=True,
        )
    with pytest.raises(ConfigError, match=r"slurm\.signal_delay_s"):
        launch(
            _cfg(fashion_root, "slurm.timeout_min=1", "slurm.signal_delay_s=60"),
            tmp_path / "c",
            wait=True,
        )
    assert jobs() == before
    assert not any((tmp_path / d).exists() for d in "abc")


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _jobs() -> dict[str, dict[str, str]]:
    """Every job slurmctld still knows (finished ones for MinJobAge), as scontrol fields."""
    out = _sh("scontrol", "-o", "show", "job").stdout
    jobs = {}
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+(?:/\w+)?)=(\S*)", line))
        if "JobId" in fields:
            jobs[fields["JobId"]] = fields
    return jobs


def test_snakemake_profile_slurm_end_to_end(cluster, tmp_path):
    """`snakemake --profile slurm` from the repository root: data preparation ->
    pre-training through submitit (a local rule that waits for a 2-GPU, 2-task job) ->
    evaluations as jobs of the executor plugin with the resources of the params file's
    `slurm` section (partition, one GPU, one task) -> tables."""
    gpus = _cluster_gpus() >= 2
    slurm = {
        "partition": "gpu",
        "cpus_per_gpu": 1,
        "mem_gb": 0,
        "eval_mem_gb": 0,
        "timeout_min": 10,
        "eval_runtime_min": 10,
        "gpus_per_node": 2,
        "eval_gpus": 1,
        "cpu_only": False,
    }
    if not gpus:
        slurm.update(cpu_only=True, gpus_per_node=0, eval_gpus=0)
    params = _merge(
        yaml.safe_load((REPO / "params/test_tiny.yaml").read_text()),
        {
            "workflow": {
                "variants": ["folk"],
                "evals": ["knn", "linear"],
                "random_init": False,  # one run: the reference run is tested elsewhere
                "ablations": {"portions": [], "p_com": [], "loss_weights": [], "epochs": []},
            },
            "slurm": slurm,
            "launch": {"poll_s": 2},
        },
    )
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    before = set(_jobs())
    cmd = [
        "timeout",
        "-k",
        "10",
        "300",
        str(Path(sys.executable).parent / "snakemake"),
        "--profile",
        "slurm",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(params_file),
        # no slurmdbd here: job states from squeue, checked every few seconds
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--jobs",
        "4",
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=330)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    exp = params["experiment"]["name"]
    for path in (
        f"runs/{exp}/folk/DONE.json",
        f"runs/{exp}/folk/eval/knn/metrics.json",
        f"runs/{exp}/folk/eval/linear/metrics.json",
        f"results/{exp}/README.md",
    ):
        assert (work / path).is_file(), path
    ours = {i: j for i, j in _jobs().items() if i not in before}
    assert all(j["JobState"] == "COMPLETED" for j in ours.values()), ours
    rules = [j.get("Comment", "") for j in ours.values()]
    assert any(c.startswith("rule_prepare_data") for c in rules), rules
    assert not any(
        c.startswith("rule_pretrain") for c in rules
    ), "the pretrain rule ran as a SLURM job that submits another: make it a local rule"
    trainers = [j for j in ours.values() if j["JobName"] == f"folk-pretrain-{exp}-folk"]
    assert len(trainers) == 1, ours  # pre-training: one submitit job
    evals = [j for j in ours.values() if j.get("Comment", "").startswith("rule_evaluate")]
    assert len(evals) == 2, rules
    # every job where the params file's slurm section put it
    assert trainers[0]["Partition"] == "gpu", trainers
    if gpus:
        assert trainers[0]["NumTasks"] == "2" and trainers[0]["TresPerNode"] == "gres:gpu:2"
        assert json.loads((work / f"runs/{exp}/folk/DONE.json").read_text())["world_size"] == 2
    wiring = (
        "the evaluate rule takes its resources from the params file's slurm section: "
        "resources: **rule_resources(config, 'eval') (folk.launch.resources)"
    )
    assert all(j["Partition"] == "gpu" for j in evals), (wiring, evals)
    assert all(j["NumTasks"] == "1" for j in evals), evals  # one process per evaluation
    if gpus:
        assert all(j.get("TresPerJob") == "gres:gpu:1" for j in evals), (wiring, evals)
