"""Submission through submitit, the job record of a run directory, and ``--wait``.

``launch(cfg, run_dir, task)`` checks everything it can before submitting (options,
cluster partition, the run directory), then:

- ``launch.executor: none``: calls the job object in this process (the same callable a
  cluster job runs);
- ``local``: submitit's LocalExecutor (a controller process on this machine, the same
  signal/requeue protocol as SLURM);
- ``slurm``: submitit's SlurmExecutor (sbatch + srun, one task per GPU, ``--signal=USR2@
  slurm.signal_delay_s``, ``--requeue``).

Each submission gets a fresh submitit folder (``<run_dir>/submitit/<time>-<pid>``, or
under ``launch.folder``): SLURM job ids restart on a fresh controller, and submitit names
its files by job id only. ``<run_dir>/submitit/job.json`` records the latest job so that a
second ``folk launch`` of the same run attaches to a job still queued or running instead
of starting a rival one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

from submitit import LocalExecutor, SlurmExecutor, SlurmJob
from submitit.core.utils import pickle_load
from submitit.helpers import clean_env

from folk.config import eval_config, load_run_config
from folk.engine.pretrain import check_same_run, run_started
from folk.errors import ConfigError, DataError, FolkError, RunDirError
from folk.evals.common import is_done, task_dir
from folk.launch.jobs import job_for
from folk.launch.options import check_options
from folk.utils.io import atomic_write_json

RECORD = Path("submitit") / "job.json"
# squeue/sacct states after which the job will not run again by itself
FINAL_STATES = (
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "SPECIAL_EXIT",
    "REVOKED",
)
# seconds a finished (or vanished) job may take to show its result file (shared file systems)
RESULT_GRACE_S = 30
LOG_TAIL_LINES = 40

log = logging.getLogger(__name__)


class LaunchError(FolkError):
    """A submitted job failed, vanished, or could not be submitted."""


# ------------------------------------------------------------------ names and folders


def run_label(cfg: dict, run_dir: Path) -> str:
    return cfg["experiment"]["run_name"] or run_dir.name


def job_name(cfg: dict, run_dir: Path, task: str) -> str:
    return f"folk-{task}-{cfg['experiment']['name']}-{run_label(cfg, run_dir)}"


def submission_folder(cfg: dict, run_dir: Path) -> Path:
    """A new folder per submission (never reused: job ids may repeat)."""
    base = cfg["launch"]["folder"]
    root = (
        (Path(base) / cfg["experiment"]["name"] / run_label(cfg, run_dir))
        if base
        else run_dir / "submitit"
    )
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    folder = (root / stamp).resolve()
    n = 1
    while folder.exists():  # two submissions in the same second from one process
        n += 1
        folder = (root / f"{stamp}-{n}").resolve()
    return folder


# ------------------------------------------------------------------ before submission


def check_run_dir(
    cfg: dict, run_dir: Path, task: str, params: str | None, eval_overrides: list[str]
) -> str | None:
    """Refuse what would fail in the job; returns a reason when there is nothing to do."""
    if task == "pretrain":
        if (run_dir / "DONE.json").is_file():
            return f"{run_dir / 'DONE.json'} exists: the run is finished"
        if (run_dir / "config.yaml").is_file():
            if run_started(run_dir):
                check_same_run(load_run_config(run_dir), cfg, run_dir)
        root = Path(cfg["data"]["root"])
        if not root.exists():  # the job would fail on it after waiting in the queue
            raise DataError(
                f"key 'data.root' = '{root}' does not exist (run `folk prepare` "
                f"first; relative paths are from {Path.cwd()})"
            )
        return None
    for name in ("DONE.json", "backbone.pt"):
        if not (run_dir / name).is_file():
            raise RunDirError(
                f"{run_dir}: no {name}; fine-tuning needs a finished pre-training run"
            )

    eval_config(run_dir, params, eval_overrides)  # every eval key checked now, not in the job
    out_dir = task_dir(run_dir, "finetune", "")
    if is_done(out_dir):
        return f"{out_dir / 'metrics.json'} exists: fine-tuning is finished"
    return None


def make_executor(cfg: dict, folder: Path, parameters: dict):
    """submitit executor of launch.executor, with the checked parameters."""
    kind = cfg["launch"]["executor"]
    cls = SlurmExecutor if kind == "slurm" else LocalExecutor
    try:
        executor = cls(folder=folder, max_num_timeout=cfg["slurm"]["max_requeues"])
        executor.update_parameters(**parameters)
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"launch.executor={kind}: submitit refused the options: {exc}") from None
    return executor


# ------------------------------------------------------------------ job record, attach


def _record_path(run_dir: Path) -> Path:
    return run_dir / RECORD


def write_record(run_dir: Path, job, kind: str, task: str, name: str, folder: Path) -> dict:
    record = {
        "job_id": str(job.job_id),
        "executor": kind,
        "task": task,
        "job_name": name,
        "folder": str(folder),
        "tasks": int(job.num_tasks),
        "stdout": str(_task0(job).paths.stdout),
        "stderr": str(_task0(job).paths.stderr),
        "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
    }
    atomic_write_json(_record_path(run_dir), record)
    return record


def read_record(run_dir: Path) -> dict | None:
    path = _record_path(run_dir)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _run(cmd: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None


def slurm_job_info(job_id: str) -> tuple[str, str, str] | None:
    """(state, job name, reason) from squeue, else (state, name, '') from sacct; None when
    neither knows the job (gone from squeue after MinJobAge and no accounting)."""
    out = _run(["squeue", "-h", "-j", str(job_id), "-t", "all", "-o", "%T|%j|%r"])
    if out is not None and out.returncode == 0:
        for line in out.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[0]:
                return parts[0], parts[1], parts[2]
    out = _run(["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State,JobName"])
    if out is not None and out.returncode == 0:
        for line in out.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 2 and parts[0]:
                return parts[0].split()[0], parts[1], ""
    return None


def is_final(state: str) -> bool:
    return state.upper().startswith(FINAL_STATES)


def attachable_job(run_dir: Path, kind: str, task: str, name: str):
    """The recorded SLURM job of this run when it is still queued or running (same job
    name: a restarted controller reuses ids), else None."""
    record = read_record(run_dir)
    if (
        kind != "slurm"
        or not record
        or record.get("executor") != "slurm"
        or record.get("task") != task
        or record.get("job_name") != name
    ):
        return None
    info = slurm_job_info(record["job_id"])
    if info is None or is_final(info[0]) or info[1] != name:
        return None

    return SlurmJob(
        folder=record["folder"],
        job_id=record["job_id"],
        tasks=list(range(int(record.get("tasks", 1)))),
    )


# ------------------------------------------------------------------ waiting


def _task0(job):
    return job.task(0)


def log_tail(job, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of task 0's stderr log (then stdout), for error messages."""
    paths = _task0(job).paths
    for path in (paths.stderr, paths.stdout):
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            continue
        if text.strip():
            tail = "\n".join(text.rstrip().splitlines()[-lines:])
            return f"--- last {lines} lines of {path} ---\n{tail}"
    return f"(no log at {paths.stderr})"


def cancel(job, kind: str) -> None:
    """Stop a job so that it checkpoints: SIGTERM reaches the training processes."""
    if kind == "slurm":
        _run(["scancel", str(job.job_id)])
        return
    process = getattr(job, "_process", None)
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the local controller forwards it to the tasks


def _state(job, kind: str) -> str | None:
    if kind == "slurm":
        info = slurm_job_info(job.job_id)
        if info is None:
            return None
        state, _, reason = info
        return f"{state} ({reason})" if reason and reason not in ("None", "(null)") else state
    process = getattr(job, "_process", None)
    if process is None:
        return None
    code = process.poll()
    return "RUNNING" if code is None else f"COMPLETED (controller exit {code})"


def wait_for(job, kind: str, poll_s: float, say: Callable[[str], None] = log.info) -> dict:
    """Block until the job's result file exists, or the job is over without one; returns
    the job's return value or raises LaunchError with the log tail. Ctrl-C or SIGTERM
    cancels the job (it checkpoints) and raises."""
    result_path = _task0(job).paths.result_pickle
    previous_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    in_main = True
    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        in_main = False
    last, over_since = None, None
    try:
        while not result_path.exists():
            state = _state(job, kind)
            if state != last:
                say(f"job {job.job_id}: {state or 'no longer known to the scheduler'}")
                last = state
            over = state is None or is_final(state.split()[0])
            if over:
                over_since = over_since or time.time()
                if time.time() - over_since > RESULT_GRACE_S:
                    break
            else:
                over_since = None
            time.sleep(min(poll_s, 2.0) if over else poll_s)
    except KeyboardInterrupt:
        cancel(job, kind)
        raise LaunchError(
            f"interrupted: job {job.job_id} cancelled (it writes last.pt "
            f"before it stops); run the same command again to resume"
        ) from None
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous_term)
    return read_outcome(job)


def read_outcome(job) -> dict:
    path = _task0(job).paths.result_pickle
    if not path.exists():
        raise LaunchError(
            f"job {job.job_id} ended without a result (killed, out of memory, "
            f"or cancelled before it started); its run directory keeps the last "
            f"checkpoint: launch again to resume\n{log_tail(job)}"
        )
    outcome, value = pickle_load(path)
    if outcome == "success":
        return value if isinstance(value, dict) else {"result": value}
    last = str(value).strip().splitlines()[-1:] or [""]
    raise LaunchError(f"job {job.job_id} failed: {last[0]}\n{log_tail(job)}")


# ------------------------------------------------------------------ the entry point


def launch(
    cfg: dict,
    run_dir: str | Path,
    task: str = "pretrain",
    wait: bool = False,
    params: str | None = None,
    eval_overrides: list[str] | None = None,
    say: Callable[[str], None] = log.info,
) -> dict:
    """Run or submit ``task`` for ``run_dir``; see the module docstring. Returns
    ``{"status": "done" | "finished" | "submitted", "job_id", "folder", "result"}``."""
    run_dir = Path(run_dir).resolve()
    eval_overrides = list(eval_overrides or [])
    kind = cfg["launch"]["executor"]
    name = job_name(cfg, run_dir, task)
    parameters = check_options(cfg, task, name)  # before anything touches the cluster
    reason = check_run_dir(cfg, run_dir, task, params, eval_overrides)
    if reason:
        say(f"{reason}: nothing to submit")
        return {"status": "done", "job_id": None, "folder": None, "result": {}}
    job_object = job_for(task, cfg, run_dir, params, eval_overrides)
    if kind == "none":
        return {"status": "finished", "job_id": None, "folder": None, "result": job_object()}

    job = attachable_job(run_dir, kind, task, name)
    if job is not None:
        folder = Path(job.paths.folder)
        say(
            f"job {job.job_id} of this run is still queued or running: attaching to it "
            f"instead of submitting another"
        )
    else:
        folder = submission_folder(cfg, run_dir)
        executor = make_executor(cfg, folder, parameters)

        try:
            with clean_env():  # an enclosing SLURM job's variables must not leak into sbatch
                job = executor.submit(job_object)
        except Exception as exc:  # sbatch's own refusal (account, QOS, limits ...)
            raise LaunchError(f"submission failed ({kind}): {exc}\noptions: {parameters}") from None
        write_record(run_dir, job, kind, task, name, folder)
        say(f"submitted {task} of {run_dir} as {kind} job {job.job_id}")
    paths = _task0(job).paths
    say(f"logs: {paths.stdout} and {paths.stderr}")
    summary = {
        "status": "submitted",
        "job_id": str(job.job_id),
        "folder": str(folder),
        "result": {},
    }
    if not wait:
        return summary
    summary["result"] = wait_for(job, kind, cfg["launch"]["poll_s"], say)
    summary["status"] = "finished"
    return summary
