"""Pre-training engine: loop, step, checkpoints, distributed set-up."""
