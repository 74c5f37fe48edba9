"""The callables submitit runs: pre-training and fine-tuning of one run directory.

Each is a ``submitit.helpers.Checkpointable``: when SLURM warns of a time-out or a
pre-emption (SIGUSR2, ``slurm.signal_delay_s`` before the end), the engine finishes the
current step, writes ``checkpoints/last.pt`` and hands the signal on to submitit's handler,
which calls ``checkpoint()`` below and requeues the job (at most ``slurm.max_requeues``
time-outs). The requeued job calls the same object again, and ``pretrain`` resumes from
``last.pt``. The objects hold the resolved configuration and paths only, never tensors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import submitit
import torch
from submitit.core.job_environment import JobEnvironment
from submitit.helpers import Checkpointable, DelayedSubmission

from folk.config import defaults, merge_into, resolve, validate
from folk.engine.distributed import env_dist_info
from folk.engine.pretrain import StopRequested
from folk.evals.runner import run_task
from folk.training import pretrain
from folk.utils import log as logs
from folk.utils.lock import exclusive

log = logging.getLogger(__name__)


def _in_submitit_job() -> bool:
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


def prepare_process() -> int:
    """Inside a submitit job: the torch.distributed variables from submitit's job
    environment (one task per GPU), and torch threads = the CPUs SLURM gave the task.
    Returns the global rank."""
    if not _in_submitit_job():
        return 0

    env = submitit.JobEnvironment()
    log.info("%s", env)
    if env.num_tasks > 1:
        # CUDA_VISIBLE_DEVICES is left alone: the engine picks cuda:(local_rank % visible),
        # right whether the cluster shows each task every GPU of the node or only its own
        submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=False, overwrite=True
        )
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        torch.set_num_threads(int(cpus))
    return env.global_rank


def refresh_config(cfg: dict) -> dict:
    """The submitted configuration read again through the defaults and checks of the code
    that runs now: a job may start (or be requeued) after the code gained a key, and its
    run directory's config.yaml, re-read the same way, must still match it."""
    source = "the submitted configuration"
    fresh = merge_into(defaults(), cfg, source)
    validate(fresh, source)
    return resolve(fresh)


class _RunJob(Checkpointable):
    """Shared behaviour: set-up, the stop signals, requeue."""

    task = ""

    def __init__(self, cfg: dict, run_dir: str | Path):
        self.cfg = cfg
        self.run_dir = str(Path(run_dir).resolve())
        self.log_level = logs.chosen_level()  # the job logs as `folk -q/-v launch` asked

    def __call__(self) -> dict:
        with self._logs():
            rank = prepare_process()
            try:
                return self.run()
            except StopRequested as stop:
                if rank != 0 and _in_submitit_job() and stop.signum == _preempt_signal():
                    # rank 0 checkpoints and requeues the whole job; a result file written
                    # here would be read as this task's outcome after the requeue
                    raise SystemExit(0) from None
                raise

    def _logs(self):
        """The job's messages on its stderr (SLURM's log file), as `folk launch` writes
        them; called by `folk launch` itself (launch.executor none), the command's stand."""
        if not _in_submitit_job():
            return contextlib.nullcontext()
        # a job pickled by an older version has no log_level
        return logs.to_stderr("folk launch", getattr(self, "log_level", logs.DEFAULT))

    def run(self) -> dict:
        raise NotImplementedError

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        """Called by submitit on time-out/pre-emption, after the engine saved last.pt:
        the same job again, which resumes from the run directory."""
        log.info("requeue requested: %s of %s resumes from its checkpoint", self.task, self.run_dir)
        return DelayedSubmission(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(run_dir={self.run_dir!r})"


def _preempt_signal() -> int:
    return int(JobEnvironment._usr_sig())


class PretrainJob(_RunJob):
    """``folk pretrain`` of one run directory (resumes; no-op once DONE.json exists)."""

    task = "pretrain"

    def run(self) -> dict:
        # the job's rank 0 holds the run directory as `folk pretrain` does (a requeued job
        # starts after SLURM ended the previous one, whose lock went with it)
        job = os.environ.get("SLURM_JOB_ID") or f"pid {os.getpid()}"
        holder = (
            exclusive(self.run_dir, f"folk launch pretrain job {job}")
            if env_dist_info().is_main
            else contextlib.nullcontext()
        )
        with holder:
            done = pretrain(refresh_config(self.cfg), self.run_dir)
        if not done:  # already finished, or a non-zero rank
            done_path = Path(self.run_dir) / "DONE.json"
            if done_path.is_file():
                done = json.loads(done_path.read_text())
        return dict(done or {})


class FinetuneJob(_RunJob):
    """``folk eval finetune --run RUN_DIR`` (resumes from the evaluation's checkpoint.pt)."""

    task = "finetune"

    def __init__(
        self, cfg: dict, run_dir: str | Path, params: str | None, eval_overrides: list[str]
    ):
        super().__init__(cfg, run_dir)
        self.params = str(Path(params).resolve()) if params else None
        self.eval_overrides = list(eval_overrides)

    def run(self) -> dict:
        metrics = run_task(
            self.run_dir, "finetune", params=self.params, overrides=self.eval_overrides
        )
        return json.loads(metrics.read_text()) if metrics.is_file() else {}


def job_for(
    task: str,
    cfg: dict,
    run_dir: str | Path,
    params: str | None = None,
    eval_overrides: list[str] | None = None,
) -> _RunJob:
    if task == "pretrain":
        return PretrainJob(cfg, run_dir)
    return FinetuneJob(cfg, run_dir, params, eval_overrides or [])


__all__ = ["PretrainJob", "FinetuneJob", "job_for", "prepare_process"]
