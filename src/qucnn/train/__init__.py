"""Training: a run's configuration and data splits, the loop with atomic checkpoints and bit-identical
resume, data parallelism, comparisons of model kinds (tuned on validation, over seeds), and what a run
reports.

Example:
    >>> TrainConfig().kind
    'quantum'
"""

from .checkpoint import load_checkpoint
from .compare import TUNE_GRID, compare_table, tune
from .config import DTYPES, RUN_KEYS, SCHEDULES, TrainConfig, check_resume, data_order, make_splits, one_cycle
from .loop import evaluate, fit
from .run import train

__all__ = ["DTYPES", "RUN_KEYS", "SCHEDULES", "TUNE_GRID", "TrainConfig", "check_resume", "compare_table", "data_order",
           "evaluate", "fit", "load_checkpoint", "make_splits", "one_cycle", "train", "tune"]
