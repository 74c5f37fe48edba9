"""Evaluations of a pre-training run directory (spec, section 5)."""
