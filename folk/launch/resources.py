"""Snakemake resources per rule for the SLURM executor plugin (2.x), from the ``slurm``
section of the params file, and the checks the workflow runs before submitting anything.

Used by the workflow rules (``resources: **rule_resources(config, "eval", executor)``);
plain functions of the configuration so that they are tested without Snakemake. Only jobs
that go to SLURM get them: on one machine Snakemake's own scheduler would read a cluster
node's ``mem_mb`` or GPU count as what this machine must have.

GPU pitfall of the plugin: a job with ``gpu=N`` and a ``tasks`` resource gets
``--ntasks-per-gpu``, and some plugin versions (2.6, issue #459) start N copies of a
single-process command. ``folk eval`` is one process: GPU jobs here set ``tasks=0``, which
every 2.x release reads as "no --ntasks-per-gpu" (one task).
"""

from __future__ import annotations

import shlex

from folk.errors import ConfigError
from folk.launch.options import check_extra_sbatch, check_partition, gpu_counts

RULE_KINDS = ("eval", "pretrain", "cpu")
# Snakemake's executors that run jobs on SLURM: `slurm` submits each job with its resources;
# `slurm-jobstep`, the Snakemake inside the job, reads them again (GPUs, CPUs) for srun
SLURM_EXECUTORS = ("slurm", "slurm-jobstep")


def slurm_extra(cfg: dict) -> str:
    """``slurm.extra_sbatch`` as the plugin's ``slurm_extra`` string."""
    flags = []
    for flag, value in check_extra_sbatch(cfg["slurm"]["extra_sbatch"]).items():
        flags.append(f"--{flag}" if value is True else f"--{flag}={shlex.quote(str(value))}")
    return " ".join(flags)


def _common(cfg: dict) -> dict:
    s = cfg["slurm"]
    out: dict = {}
    if s["partition"]:
        out["slurm_partition"] = s["partition"]
    if s["account"]:
        out["slurm_account"] = s["account"]
    if s["qos"]:
        out["qos"] = s["qos"]
    if s["constraint"]:
        out["constraint"] = s["constraint"]
    extra = slurm_extra(cfg)
    if extra:
        out["slurm_extra"] = extra
    return out


def _gpu(n: int, cpus_per_gpu: int) -> dict:
    if n < 1:
        return {}
    return {"gpu": n, "cpus_per_gpu": cpus_per_gpu, "tasks": 0}


def rule_resources(cfg: dict, kind: str, executor: str = "slurm") -> dict:
    """Resources of one rule kind for jobs that Snakemake's ``executor`` runs; none unless
    that is a SLURM one (SLURM_EXECUTORS), the threads of the rule being all a local job
    needs:

    - ``eval``: a ``folk eval`` job: ``slurm.eval_gpus`` GPUs (one process),
      ``slurm.cpus_per_gpu`` CPUs each, ``slurm.eval_mem_gb``, ``slurm.eval_runtime_min``;
    - ``pretrain``: pre-training as a plugin job (only with ``launch.executor: none``; with
      ``slurm`` the rule is local and submitit requests the GPUs): one process, so one GPU;
      use ``launch.executor: slurm`` for multi-GPU DDP;
    - ``cpu``: data preparation, report: partition/account only (threads give the CPUs).
    """
    if kind not in RULE_KINDS:
        raise ConfigError(f"unknown rule kind {kind!r}; choose one of {list(RULE_KINDS)}")
    if executor not in SLURM_EXECUTORS:
        return {}
    s = cfg["slurm"]
    train_gpus, eval_gpus = gpu_counts(cfg)
    out = _common(cfg)
    if kind == "eval":
        out["runtime"] = s["eval_runtime_min"]
        if s["eval_mem_gb"]:
            out["mem_mb"] = s["eval_mem_gb"] * 1024
        out.update(_gpu(eval_gpus, s["cpus_per_gpu"]))
    elif kind == "pretrain":
        out["runtime"] = s["timeout_min"]
        if s["mem_gb"]:
            out["mem_mb"] = s["mem_gb"] * 1024
        out.update(_gpu(min(train_gpus, 1), s["cpus_per_gpu"]))
    return out


def check_workflow_slurm(cfg: dict) -> None:
    """Before the first job: the options the profile and the rules will use (GPU counts
    against slurm.cpu_only, extra sbatch flags, the partition against ``sinfo``)."""
    gpu_counts(cfg)
    check_extra_sbatch(cfg["slurm"]["extra_sbatch"])
    check_partition(cfg["slurm"]["partition"])
