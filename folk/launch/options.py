"""Executor options from the ``launch`` and ``slurm`` sections, checked before anything is
submitted: every error names the key at fault (and, for the cluster, what it offers)."""

from __future__ import annotations

import re
import shutil
import subprocess

from folk.errors import ConfigError

TASKS = ("pretrain", "finetune")

# sbatch flags that `slurm.*` keys (or submitit itself) already set: giving them again in
# slurm.extra_sbatch would silently contradict those keys, so it is refused
RESERVED_SBATCH = {
    "partition": "slurm.partition",
    "p": "slurm.partition",
    "account": "slurm.account",
    "A": "slurm.account",
    "qos": "slurm.qos",
    "constraint": "slurm.constraint",
    "C": "slurm.constraint",
    "nodes": "slurm.nodes",
    "N": "slurm.nodes",
    "gpus-per-node": "slurm.gpus_per_node",
    "gres": "slurm.gpus_per_node",
    "gpus": "slurm.gpus_per_node",
    "G": "slurm.gpus_per_node",
    "cpus-per-task": "slurm.cpus_per_gpu",
    "c": "slurm.cpus_per_gpu",
    "cpus-per-gpu": "slurm.cpus_per_gpu",
    "ntasks-per-node": "slurm.gpus_per_node (one task per GPU)",
    "ntasks": "slurm.gpus_per_node (one task per GPU)",
    "n": "slurm.gpus_per_node",
    "mem": "slurm.mem_gb",
    "time": "slurm.timeout_min",
    "t": "slurm.timeout_min",
    "signal": "slurm.signal_delay_s",
    "output": "the submitit folder",
    "o": "the submitit folder",
    "error": "the submitit folder",
    "e": "the submitit folder",
    "job-name": "the run name",
    "J": "the run name",
    "open-mode": "submitit",
    "array": "submitit",
    "a": "submitit",
    "wckey": "submitit",
}
_FLAG = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def _err(key: str, value, why: str) -> ConfigError:
    return ConfigError(f"key '{key}' = {value!r} {why}", key=key)


def check_extra_sbatch(extra: dict) -> dict[str, object]:
    """``slurm.extra_sbatch`` as sbatch flags (``mail_type`` -> ``--mail-type``)."""
    if not isinstance(extra, dict):
        raise _err("slurm.extra_sbatch", extra, "must be a mapping of sbatch flag: value")
    out: dict[str, object] = {}
    for key, value in extra.items():
        if not isinstance(key, str) or not _FLAG.fullmatch(key):
            raise _err(
                "slurm.extra_sbatch",
                extra,
                f"has a bad flag name {key!r} "
                "(letters, digits, '-' and '_', without the leading '--')",
            )
        flag = key.replace("_", "-")
        if flag in RESERVED_SBATCH or key in RESERVED_SBATCH:
            owner = RESERVED_SBATCH.get(flag) or RESERVED_SBATCH[key]
            raise _err(
                "slurm.extra_sbatch",
                extra,
                f"sets --{flag}, which {owner} controls: set that instead",
            )
        if value is None or isinstance(value, (dict, list)):
            raise _err(
                "slurm.extra_sbatch",
                extra,
                f"flag {key!r} needs a plain value (string, number or true), got {value!r}",
            )
        if value is False:
            continue  # a switch turned off: not passed
        out[flag] = value
    return out


def check_setup(setup: list) -> list[str]:
    if not isinstance(setup, list) or not all(isinstance(s, str) for s in setup):
        raise _err("slurm.setup", setup, "must be a list of shell lines (strings)")
    return list(setup)


def gpu_counts(cfg: dict) -> tuple[int, int]:
    """(GPUs per node for pre-training, GPUs of an evaluation job), checked against
    slurm.cpu_only: a GPU job with zero GPUs is refused rather than run on CPUs for days."""
    s = cfg["slurm"]
    train, ev = s["gpus_per_node"], s["eval_gpus"]
    if s["cpu_only"]:
        for key, value in (("slurm.gpus_per_node", train), ("slurm.eval_gpus", ev)):
            if value:
                raise _err(
                    key,
                    value,
                    "asks for GPUs but slurm.cpu_only is true: set it to 0, "
                    "or slurm.cpu_only=false",
                )
        return 0, 0
    for key, value in (("slurm.gpus_per_node", train), ("slurm.eval_gpus", ev)):
        if value < 1:
            raise _err(
                key,
                value,
                "gives a GPU job no GPU: set it to >= 1, or slurm.cpu_only=true to run on CPUs",
            )
    return train, ev


def cluster_partitions() -> list[str] | None:
    """Partition names from ``sinfo`` (None when sinfo is absent or fails)."""
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return sorted({line.strip().rstrip("*") for line in out.stdout.splitlines() if line.strip()})


def check_partition(partition: str, key: str = "slurm.partition") -> None:
    if not partition:
        return
    known = cluster_partitions()
    if known is not None and partition not in known:
        raise _err(
            key,
            partition,
            f"is not a partition of this cluster (sinfo lists: {', '.join(known) or 'none'})",
        )


def check_cluster(cfg: dict) -> None:
    """What only the cluster can tell: sbatch reachable, the partition known."""
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "key 'launch.executor' = 'slurm' but sbatch is not on PATH: run on "
            "a SLURM login node, or set launch.executor=local|none"
        )
    check_partition(cfg["slurm"]["partition"])


def check_times(cfg: dict, task: str) -> None:
    """The warning signal must come before the time limit, or every attempt is requeued
    at once and no training happens."""
    s = cfg["slurm"]
    limit_key = "slurm.timeout_min" if task == "pretrain" else "slurm.eval_runtime_min"
    limit = s["timeout_min"] if task == "pretrain" else s["eval_runtime_min"]
    if s["signal_delay_s"] >= limit * 60:
        raise _err(
            "slurm.signal_delay_s",
            s["signal_delay_s"],
            f"must be shorter than the time limit {limit_key} = {limit} min",
        )


def slurm_parameters(cfg: dict, task: str, job_name: str) -> dict:
    """submitit SlurmExecutor parameters: one task per GPU (DDP), CPUs per GPU per task."""
    if task not in TASKS:
        raise ConfigError(f"unknown launch task {task!r}; choose one of {list(TASKS)}")
    s = cfg["slurm"]
    train_gpus, eval_gpus = gpu_counts(cfg)
    check_times(cfg, task)
    extra = check_extra_sbatch(s["extra_sbatch"])
    # --requeue: clusters with JobRequeue=0 refuse `scontrol requeue` without it
    extra.setdefault("requeue", True)
    params: dict = {
        "job_name": job_name,
        "signal_delay_s": s["signal_delay_s"],
        "setup": check_setup(s["setup"]),
        "additional_parameters": extra,
    }
    if task == "pretrain":
        params.update(
            nodes=s["nodes"],
            ntasks_per_node=max(1, train_gpus),
            cpus_per_task=s["cpus_per_gpu"],
            time=s["timeout_min"],
        )
        if train_gpus:
            params["gpus_per_node"] = train_gpus
        mem_gb = s["mem_gb"]
    else:  # a fine-tuning evaluation: one process
        params.update(
            nodes=1,
            ntasks_per_node=1,
            time=s["eval_runtime_min"],
            cpus_per_task=s["cpus_per_gpu"] * max(1, eval_gpus),
        )
        if eval_gpus:
            params["gpus_per_node"] = eval_gpus
        mem_gb = s["eval_mem_gb"]
    if mem_gb:
        params["mem"] = f"{mem_gb}GB"
    for key in ("partition", "account", "qos", "constraint"):
        if s[key]:
            params[key] = s[key]
    return params


def local_parameters(cfg: dict, task: str) -> dict:
    """submitit LocalExecutor parameters (one node; the same time limit and signal)."""
    s = cfg["slurm"]
    train_gpus, eval_gpus = gpu_counts(cfg)
    check_times(cfg, task)
    if task == "pretrain" and s["nodes"] != 1:
        raise _err("slurm.nodes", s["nodes"], "must be 1 with launch.executor=local")
    gpus = train_gpus if task == "pretrain" else eval_gpus
    tasks = max(1, gpus) if task == "pretrain" else 1
    timeout = s["timeout_min"] if task == "pretrain" else s["eval_runtime_min"]
    return {
        "timeout_min": timeout,
        "gpus_per_node": gpus,
        "tasks_per_node": tasks,
        "signal_delay_s": s["signal_delay_s"],
        "setup": check_setup(s["setup"]),
    }


def check_options(cfg: dict, task: str, job_name: str = "folk") -> dict:
    """Every check that can fail before submission; returns the executor parameters."""
    executor = cfg["launch"]["executor"]
    if task not in TASKS:
        raise ConfigError(f"unknown launch task {task!r}; choose one of {list(TASKS)}")
    if executor == "slurm":
        params = slurm_parameters(cfg, task, job_name)
        check_cluster(cfg)
        return params
    if executor == "local":
        return local_parameters(cfg, task)
    return {}
