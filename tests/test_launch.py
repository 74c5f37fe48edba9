"""`folk launch` without a SLURM cluster: option checks (sbatch flags read back from
submitit's own sbatch writer), Snakemake resources, submitit's real signal handler chained
after the engine's checkpoint, the in-process and local executors, and --wait's errors.
The real-cluster tests are in tests/slurm/."""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
import time
from pathlib import Path

import pytest
import torch

from folk.config import load_config
from folk.errors import ConfigError, FolkError

REPO = Path(__file__).resolve().parents[1]


def paper(*sets: str) -> dict:
    return load_config(None, list(sets))


def sbatch_lines(params: dict, tmp_path: Path) -> list[str]:
    from submitit.slurm.slurm import _make_sbatch_string

    text = _make_sbatch_string(command="python job.py", folder=tmp_path, **params)
    return text.splitlines()


def fake_commands(tmp_path: Path, monkeypatch, **scripts: str) -> Path:
    """Executables named like SLURM's commands in a directory put first on PATH."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


# ------------------------------------------------------------------ options


def test_paper_defaults_give_one_task_per_gpu_with_usr2_and_requeue(tmp_path):
    from folk.launch.options import slurm_parameters

    cfg = paper(
        "slurm.nodes=2",
        "slurm.partition=gpu",
        "slurm.account=proj",
        "slurm.qos=high",
        "slurm.constraint=a100",
        "slurm.mem_gb=480",
        "slurm.extra_sbatch={mail_type: END, exclusive: true, hint: false}",
        "slurm.setup=['module load cuda']",
    )
    lines = sbatch_lines(slurm_parameters(cfg, "pretrain", "folk-x"), tmp_path)
    for flag in (
        "--nodes=2",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--cpus-per-task=10",
        "--time=4320",
        "--signal=USR2@120",
        "--requeue",
        "--partition=gpu",
        "--account=proj",
        "--qos=high",
        "--constraint=a100",
        "--mem=480GB",
        "--mail-type=END",
        "--exclusive",
        "--job-name=folk-x",
    ):
        assert f"#SBATCH {flag}" in lines, flag
    assert not any("hint" in line for line in lines)  # a switch set to false is left out
    assert "module load cuda" in lines
    # every task runs the submitit entry point through one srun
    assert sum(line.startswith("srun ") for line in lines) == 1


def test_finetune_job_is_one_process_with_eval_resources(tmp_path):
    from folk.launch.options import slurm_parameters

    cfg = paper("slurm.eval_gpus=2", "slurm.eval_mem_gb=100", "slurm.eval_runtime_min=90")
    lines = sbatch_lines(slurm_parameters(cfg, "finetune", "ft"), tmp_path)
    for flag in (
        "--ntasks-per-node=1",
        "--gpus-per-node=2",
        "--cpus-per-task=20",
        "--time=90",
        "--mem=100GB",
        "--nodes=1",
    ):
        assert f"#SBATCH {flag}" in lines, flag


def test_cpu_only_requests_no_gpu(tmp_path):
    from folk.launch.options import slurm_parameters

    cfg = paper(
        "slurm.cpu_only=true", "slurm.gpus_per_node=0", "slurm.eval_gpus=0", "slurm.cpus_per_gpu=3"
    )
    lines = sbatch_lines(slurm_parameters(cfg, "pretrain", "x"), tmp_path)
    assert "#SBATCH --ntasks-per-node=1" in lines and "#SBATCH --cpus-per-task=3" in lines
    assert not any(line.startswith(("#SBATCH --gpu", "#SBATCH --gres")) for line in lines)


@pytest.mark.parametrize(
    "sets, key",
    [
        (["slurm.gpus_per_node=0"], "slurm.gpus_per_node"),
        (["slurm.eval_gpus=0"], "slurm.eval_gpus"),
        (["slurm.cpu_only=true"], "slurm.gpus_per_node"),
        (["slurm.cpu_only=true", "slurm.gpus_per_node=0"], "slurm.eval_gpus"),
        (["slurm.extra_sbatch={time: 10}"], "slurm.timeout_min"),
        (["slurm.extra_sbatch={gres: 'gpu:2'}"], "slurm.gpus_per_node"),
        (["slurm.extra_sbatch={'--mail-type': END}"], "slurm.extra_sbatch"),
        (["slurm.extra_sbatch={mail-type: [END]}"], "slurm.extra_sbatch"),
        (["slurm.timeout_min=2", "slurm.signal_delay_s=120"], "slurm.signal_delay_s"),
        (["slurm.setup=[1, 2]"], "slurm.setup"),
    ],
)
def test_bad_options_name_the_key(sets, key):
    from folk.launch.options import slurm_parameters

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        slurm_parameters(paper(*sets), "pretrain", "x")


def test_a_flag_without_a_plain_value_is_named_with_its_value():
    from folk.launch.options import slurm_parameters

    with pytest.raises(ConfigError) as err:
        slurm_parameters(paper("slurm.extra_sbatch={mail-type: [END]}"), "pretrain", "x")
    assert "flag 'mail-type' needs a plain value" in str(err.value)
    assert "got ['END']" in str(err.value) and "{value" not in str(err.value)


def test_local_executor_is_one_node():
    from folk.launch.options import local_parameters

    with pytest.raises(ConfigError, match=r"slurm\.nodes"):
        local_parameters(paper("slurm.nodes=2"), "pretrain")
    params = local_parameters(paper("slurm.gpus_per_node=2", "slurm.timeout_min=30"), "pretrain")
    assert params["tasks_per_node"] == 2 and params["gpus_per_node"] == 2
    assert params["timeout_min"] == 30 and params["signal_delay_s"] == 120


def test_partition_checked_against_sinfo(tmp_path, monkeypatch):
    from folk.launch.options import check_cluster, check_partition, cluster_partitions

    fake_commands(tmp_path, monkeypatch, sinfo="printf 'debug*\\ngpu\\ngpu\\n'")
    assert cluster_partitions() == ["debug", "gpu"]
    check_partition("gpu")
    check_partition("")  # the cluster default
    with pytest.raises(ConfigError, match=r"slurm\.partition.*'nope'.*debug, gpu"):
        check_partition("nope")
    # no sbatch on PATH: not a SLURM login node
    monkeypatch.setenv("PATH", str(tmp_path / "fakebin"))
    with pytest.raises(ConfigError, match=r"launch\.executor.*sbatch"):
        check_cluster(paper("launch.executor=slurm"))


def test_bad_partition_fails_before_submission(tmp_path, monkeypatch, capsys):
    """The CLI's message names the option, and sbatch is never called."""
    from folk.cli import main

    marker = tmp_path / "sbatch-called"
    fake_commands(
        tmp_path,
        monkeypatch,
        sinfo="echo 'debug*'",
        sbatch=f"touch {marker}; echo 'Submitted batch job 1'",
        srun="exit 0",
    )
    (tmp_path / "data").mkdir()
    code = main(
        [
            "launch",
            "--config",
            str(REPO / "params/test_tiny.yaml"),
            "--set",
            "launch.executor=slurm",
            "--set",
            "slurm.partition=gpu-a100",
            "--set",
            f"data.root={tmp_path / 'data'}",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "slurm.partition" in err and "gpu-a100" in err and "debug" in err
    assert not marker.exists() and not (tmp_path / "run").exists()
    code = main(
        [
            "launch",
            "--config",
            str(REPO / "params/test_tiny.yaml"),
            "--set",
            "launch.executor=slurm",
            "--set",
            "slurm.gpus_per_node=0",
            "--set",
            "slurm.cpu_only=false",
            "--set",
            f"data.root={tmp_path / 'data'}",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2 and "slurm.gpus_per_node" in capsys.readouterr().err
    assert not marker.exists()


# ------------------------------------------------------------------ Snakemake resources


def test_rule_resources():
    from folk.launch.resources import check_workflow_slurm, rule_resources

    cfg = paper(
        "slurm.partition=gpu",
        "slurm.account=proj",
        "slurm.extra_sbatch={mail-type: END, exclusive: true}",
    )
    ev = rule_resources(cfg, "eval")
    assert ev == {
        "slurm_partition": "gpu",
        "slurm_account": "proj",
        "slurm_extra": "--mail-type=END --exclusive",
        "runtime": 720,
        "mem_mb": 64 * 1024,
        "gpu": 1,
        "cpus_per_gpu": 10,
        "tasks": 0,
    }
    # the Snakemake inside the SLURM job reads them again (srun's GPUs and CPUs)
    assert rule_resources(cfg, "eval", "slurm-jobstep") == ev
    # jobs that run on this machine: their threads only
    assert rule_resources(cfg, "eval", "local") == rule_resources(cfg, "pretrain", "local") == {}
    pre = rule_resources(cfg, "pretrain")  # as a plugin job: one process, one GPU
    assert pre["gpu"] == 1 and pre["runtime"] == 4320 and pre["tasks"] == 0
    assert rule_resources(cfg, "cpu") == {
        "slurm_partition": "gpu",
        "slurm_account": "proj",
        "slurm_extra": "--mail-type=END --exclusive",
    }
    cpu = paper(
        "slurm.cpu_only=true", "slurm.gpus_per_node=0", "slurm.eval_gpus=0", "slurm.eval_mem_gb=0"
    )
    assert rule_resources(cpu, "eval") == {"runtime": 720}
    with pytest.raises(ConfigError, match=r"slurm\.eval_gpus"):
        check_workflow_slurm(paper("slurm.eval_gpus=0"))


def test_profiles_resolve_from_the_repository_root():
    """`snakemake --profile slurm` looks for ./slurm/config.yaml in the working directory."""
    import yaml
    from snakemake.cli import get_profile_dir

    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        for name in ("slurm", "local"):
            found = get_profile_dir(name)
            assert found is not None, name
            assert found[1].resolve() == REPO / f"workflow/profiles/{name}/config.yaml"
    finally:
        os.chdir(cwd)
    slurm = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    assert slurm["executor"] == "slurm"
    assert slurm["config"]["launch"] == {"executor": "slurm"}
    assert slurm["set-threads"]["pretrain"] == 1


# ------------------------------------------------------------------ jobs and signals


def test_split_finetune_overrides():
    from folk.commands.launch import _split_finetune_overrides

    launch, rest = _split_finetune_overrides(
        ["slurm.eval_gpus=2", "eval.finetune.epochs=3", "launch.executor=local"]
    )
    assert launch == ["slurm.eval_gpus=2", "launch.executor=local"]
    assert rest == ["eval.finetune.epochs=3"]


def _local_job_env(monkeypatch, folder: Path, rank: int = 0, ntasks: int = 1) -> None:
    for key in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "SLURM_CPUS_PER_TASK",
    ):
        # set, then delete: monkeypatch then removes what the job environment exports
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_FOLDER", str(folder))
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", str(ntasks))
    monkeypatch.setenv("SUBMITIT_LOCAL_GLOBALID", str(rank))
    monkeypatch.setenv("SUBMITIT_LOCAL_LOCALID", str(rank))
    monkeypatch.setenv("SUBMITIT_LOCAL_NODEID", "0")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_NUM_NODES", "1")


def test_ddp_environment_from_submitit(tmp_path, monkeypatch):
    from folk.engine.distributed import env_dist_info
    from folk.launch.jobs import prepare_process

    _local_job_env(monkeypatch, tmp_path, rank=1, ntasks=2)
    assert prepare_process() == 1
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == (
        "1",
        "2",
        "1",
    )
    assert 20000 <= int(os.environ["MASTER_PORT"]) <= 60000 and os.environ["MASTER_ADDR"]
    info = env_dist_info()
    assert (info.rank, info.world_size, info.local_rank) == (1, 2, 1)


def test_non_main_rank_leaves_requeue_to_rank0(tmp_path, monkeypatch):
    from folk.engine.pretrain import StopRequested
    from folk.launch.jobs import PretrainJob

    class Stopped(PretrainJob):
        def run(self):
            raise StopRequested(signal.SIGUSR2)

    _local_job_env(monkeypatch, tmp_path, rank=1, ntasks=2)
    with pytest.raises(SystemExit) as exit_info:  # no result file for this task
        Stopped({}, tmp_path)()
    assert exit_info.value.code == 0
    _local_job_env(monkeypatch, tmp_path, rank=0, ntasks=2)
    with pytest.raises(StopRequested):
        Stopped({}, tmp_path)()


def _assert_same_backbones(a: Path, b: Path) -> None:
    wa = torch.load(a / "backbone.pt", weights_only=True)
    wb = torch.load(b / "backbone.pt", weights_only=True)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_usr2_checkpoints_then_submitit_requeues_and_the_job_resumes(
    tiny_cfg, tmp_path, monkeypatch
):
    """submitit's real handler (the one a SLURM or local job installs) chained after the
    engine: USR2 -> checkpoint at the step boundary -> checkpoint() -> requeue pickle ->
    exit; the requeued object resumes and ends with the uninterrupted run's weights."""
    import submitit
    from submitit.core.utils import DelayedSubmission
    from submitit.local.local import LOCAL_REQUEUE_RETURN_CODE

    from folk.engine.pretrain import pretrain
    from folk.launch.jobs import PretrainJob

    torch.set_num_threads(1)
    cfg = tiny_cfg("pretrain.epochs=6", "pretrain.checkpoint_every=1")  # 24 iterations
    pretrain(cfg, tmp_path / "straight")

    folder = tmp_path / "submitit"
    folder.mkdir()
    _local_job_env(monkeypatch, folder)
    env = submitit.JobEnvironment()
    job = PretrainJob(cfg, tmp_path / "run")
    delayed = DelayedSubmission(job)
    delayed.set_timeout(1, 3)  # 1 min: submitit counts the signal as a time-out
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM, signal.SIGCONT)}
    ckpt = tmp_path / "run/checkpoints/last.pt"

    def send_usr2_after_first_checkpoint():
        deadline = time.time() + 120
        while not ckpt.exists() and time.time() < deadline:
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGUSR2)

    try:
        env._handle_signals(env.paths, delayed)
        threading.Thread(target=send_usr2_after_first_checkpoint, daemon=True).start()
        with pytest.raises(SystemExit) as exit_info:
            delayed.result()
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert exit_info.value.code == LOCAL_REQUEUE_RETURN_CODE
    state = torch.load(ckpt, weights_only=True)
    assert 0 < state["iteration"] < 24
    assert not (tmp_path / "run/DONE.json").exists()
    requeued = DelayedSubmission.load(env.paths.submitted_pickle)
    assert isinstance(requeued.function, PretrainJob)
    assert requeued.function.run_dir == str((tmp_path / "run").resolve())
    assert requeued._timeout_countdown == 2  # one time-out used
    requeued.result()  # the requeued job: resumes from last.pt
    assert (tmp_path / "run/DONE.json").is_file()
    _assert_same_backbones(tmp_path / "straight", tmp_path / "run")


def test_job_reads_its_configuration_through_the_current_defaults(tiny_cfg, tmp_path):
    """Submitted (pickled) by code that lacked a key, requeued under code that has it:
    the job still resumes its run instead of calling it another configuration."""
    import copy

    from folk.engine.hooks import stop_after
    from folk.engine.pretrain import StopRequested, pretrain
    from folk.launch.jobs import PretrainJob

    cfg = tiny_cfg("pretrain.epochs=1")
    with pytest.raises(StopRequested):
        pretrain(cfg, tmp_path, hooks=[stop_after(2)])  # config.yaml and last.pt written
    older = copy.deepcopy(cfg)
    del older["pretrain"]["clip_grad"]  # what an older defaults.yaml would have given
    done = PretrainJob(older, tmp_path)()
    assert done["iterations"] == 4
    newer = copy.deepcopy(cfg)
    newer["pretrain"]["no_such_key"] = 1  # a key the running code does not know
    with pytest.raises(ConfigError, match="no_such_key"):
        PretrainJob(newer, tmp_path / "other")()


# ------------------------------------------------------------------ executors


def _tiny_launch_cfg(fashion_root: Path, *extra: str) -> dict:
    from conftest import tiny_overrides

    return load_config(
        None,
        tiny_overrides(fashion_root)
        + [
            "slurm.cpu_only=true",
            "slurm.gpus_per_node=0",
            "slurm.eval_gpus=0",
            "slurm.timeout_min=10",
            "slurm.signal_delay_s=30",
            "launch.poll_s=1",
            *extra,
        ],
    )


def test_executor_none_trains_in_process(fashion_root, tmp_path):
    from folk.launch.submit import launch

    cfg = _tiny_launch_cfg(fashion_root, "launch.executor=none", "pretrain.epochs=1")
    out = launch(cfg, tmp_path / "run")
    assert out["status"] == "finished" and out["result"]["iterations"] == 4
    assert (tmp_path / "run/DONE.json").is_file()
    assert launch(cfg, tmp_path / "run")["status"] == "done"  # nothing to submit again
    other = _tiny_launch_cfg(fashion_root, "launch.executor=none", "pretrain.epochs=3")
    (tmp_path / "run/DONE.json").unlink()
    with pytest.raises(FolkError, match="different configuration"):  # before any training
        launch(other, tmp_path / "run")


def test_finetune_task_in_process(fashion_root, tmp_path):
    from folk.errors import RunDirError
    from folk.launch.submit import launch

    cfg = _tiny_launch_cfg(fashion_root, "launch.executor=none", "pretrain.epochs=1")
    sets = [
        "eval.finetune.epochs=1",
        "eval.finetune.batch_size=16",
        "eval.finetune.warmup_epochs=0",
    ]
    with pytest.raises(RunDirError, match="DONE.json"):  # nothing pre-trained yet
        launch(cfg, tmp_path / "run", task="finetune", eval_overrides=sets)
    launch(cfg, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"eval\.finetune\.epochs"):  # checked before the job
        launch(cfg, tmp_path / "run", task="finetune", eval_overrides=["eval.finetune.epochs=0"])
    out = launch(cfg, tmp_path / "run", task="finetune", eval_overrides=sets)
    assert out["status"] == "finished" and out["result"]["task"] == "finetune"
    saved = json.loads((tmp_path / "run/eval/finetune/metrics.json").read_text())
    assert saved["metrics"] == out["result"]["metrics"]
    assert launch(cfg, tmp_path / "run", task="finetune", eval_overrides=sets)["status"] == "done"


def test_local_executor_runs_the_job_and_wait_reports_failures(fashion_root, tmp_path):
    from folk.launch.submit import LaunchError, launch, read_record

    cfg = _tiny_launch_cfg(fashion_root, "launch.executor=local", "pretrain.epochs=1")
    out = launch(cfg, tmp_path / "run", wait=True)
    assert out["status"] == "finished" and out["result"]["iterations"] == 4
    record = read_record(tmp_path / "run")
    assert record["job_id"] == out["job_id"] and record["executor"] == "local"
    folder = Path(out["folder"])
    assert folder.parent == (tmp_path / "run/submitit").resolve()
    assert (folder / f"{out['job_id']}_0_log.err").is_file()
    # a job that fails inside: --wait raises with the tail of the job's own log
    empty = tmp_path / "empty-data"
    empty.mkdir()
    bad = _tiny_launch_cfg(fashion_root, "launch.executor=local", f"data.root={empty}")
    with pytest.raises(LaunchError) as err:
        launch(bad, tmp_path / "bad", wait=True)
    message = str(err.value)
    assert "failed" in message and "_0_log.err" in message
    assert str(empty) in message  # the job's own error, naming the missing data


def test_each_submission_gets_a_fresh_folder(tmp_path):
    from folk.launch.submit import submission_folder

    cfg = paper("experiment.run_name=folk")
    a, b = submission_folder(cfg, tmp_path / "run"), None
    a.mkdir(parents=True)
    b = submission_folder(cfg, tmp_path / "run")
    assert a != b and a.parent == b.parent == (tmp_path / "run/submitit").resolve()
    shared = paper("launch.folder=" + str(tmp_path / "logs"), "experiment.run_name=folk")
    assert (
        submission_folder(shared, tmp_path / "run").parent
        == (tmp_path / "logs/folk/folk").resolve()
    )


def test_attach_to_a_job_still_running(tmp_path, monkeypatch):
    from folk.launch.submit import attachable_job, slurm_job_info

    run = tmp_path / "run"
    (run / "submitit").mkdir(parents=True)
    (run / "submitit/job.json").write_text(
        json.dumps(
            {
                "job_id": "17",
                "executor": "slurm",
                "task": "pretrain",
                "job_name": "folk-a",
                "folder": str(tmp_path / "f"),
                "tasks": 2,
            }
        )
    )
    state = tmp_path / "state"
    fake_commands(tmp_path, monkeypatch, squeue=f"cat {state}", sacct="exit 1")
    state.write_text("RUNNING|folk-a|None\n")
    assert slurm_job_info("17") == ("RUNNING", "folk-a", "None")
    job = attachable_job(run, "slurm", "pretrain", "folk-a")
    assert job is not None and job.job_id == "17" and job.num_tasks == 2
    assert attachable_job(run, "slurm", "finetune", "folk-a") is None
    state.write_text("RUNNING|someone-else|None\n")  # a fresh controller reused the id
    assert attachable_job(run, "slurm", "pretrain", "folk-a") is None
    state.write_text("TIMEOUT|folk-a|TimeLimit\n")
    assert attachable_job(run, "slurm", "pretrain", "folk-a") is None
    state.write_text("")
    assert slurm_job_info("17") is None
