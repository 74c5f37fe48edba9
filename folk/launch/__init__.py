"""Scale-out: pre-training and fine-tuning through submitit (local or SLURM), with
requeue on time-out and pre-emption, and the resources of the Snakemake SLURM profile.

- ``folk.launch.options``: executor options from the ``launch``/``slurm`` sections, checked
  before submission (unknown partition, GPU counts, time limits, extra sbatch flags).
- ``folk.launch.jobs``: the checkpointable callables submitit runs.
- ``folk.launch.submit``: ``launch(cfg, run_dir, task, wait)``, the job record, ``--wait``.
- ``folk.launch.resources``: per-rule Snakemake resources for the SLURM executor plugin.

README.md, "Running on a SLURM cluster", is the user guide.
"""
from __future__ import annotations

__all__ = ["launch", "LaunchError", "rule_resources", "check_workflow_slurm"]


def __getattr__(name: str):
    # lazy: `folk --help` and the Snakefile import this package without submitit's start-up
    if name in ("launch", "LaunchError"):
        from folk.launch import submit

        return getattr(submit, name)
    if name in ("rule_resources", "check_workflow_slurm"):
        from folk.launch import resources

        return getattr(resources, name)
    raise AttributeError(name)
