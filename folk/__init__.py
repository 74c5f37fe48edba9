"""folk: FOLK (frequency-guided masking with self-knowledge distillation), reproduced."""

__version__ = "0.1.0"
