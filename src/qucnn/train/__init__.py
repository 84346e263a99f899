"""Training: a run's configuration, the loop with atomic checkpoints and bit-identical resume, data
parallelism, and what a run reports.

Example:
    >>> TrainConfig().kind
    'quantum'
"""

from .checkpoint import load_checkpoint
from .config import DTYPES, RUN_KEYS, SCHEDULES, TrainConfig, check_resume, data_order, one_cycle
from .loop import evaluate, fit
from .run import train

__all__ = ["DTYPES", "RUN_KEYS", "SCHEDULES", "TrainConfig", "check_resume", "data_order", "evaluate", "fit",
           "load_checkpoint", "one_cycle", "train"]
