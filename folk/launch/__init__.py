"""Scale-out: pre-training and fine-tuning through submitit (local or SLURM), with
requeue on time-out and pre-emption, and the resources of the Snakemake SLURM profile.

- ``folk.launch.options``: executor options from the ``launch``/``slurm`` sections, checked
  before submission (unknown partition, GPU counts, time limits, extra sbatch flags).
- ``folk.launch.jobs``: the checkpointable callables submitit runs.
- ``folk.launch.submit``: ``launch(cfg, run_dir, task, wait)``, the job record, ``--wait``.
- ``folk.launch.resources``: per-rule Snakemake resources for the SLURM executor plugin.

docs/slurm.md is the user guide.
"""

from __future__ import annotations

from folk.launch.resources import check_workflow_slurm, rule_resources

# launch and LaunchError come from __getattr__
__all__ = ["launch", "LaunchError", "rule_resources", "check_workflow_slurm"]  # noqa: F822


def __getattr__(name: str):
    # the Snakefile imports folk.launch.resources, which runs this package first: submit
    # (submitit, torch) loads only when its names are asked for
    if name in ("launch", "LaunchError"):
        from folk.launch import submit  # noqa: PLC0415  torch-free package (Snakefile)

        return getattr(submit, name)
    raise AttributeError(name)
