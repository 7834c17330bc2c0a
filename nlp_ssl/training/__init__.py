"""The training engine every stage shares, one concern per module:

- ``contract``: ``Batch`` and the protocols a task implements (what the loop asks of it);
- ``config``: the ``train:`` recipe section (``TrainConfig``) and how a run is sized (``plan_steps``);
- ``state``: the counters saved with every checkpoint (``TrainState``);
- ``batch_order``: which examples each step trains on (``BatchOrder``, length grouping);
- ``evaluation``: scoring a split (``evaluate``);
- ``model_folders``: ``from_pretrained`` folders and the best model (``best_model/``);
- ``checkpointing``: saving a checkpoint and resuming from one;
- ``loop``: ``fit``, the loop itself, and the ``Accelerator`` it runs under.
"""

from nlp_ssl.training.batch_order import BatchOrder, group_by_length
from nlp_ssl.training.checkpointing import TrainingError, save_checkpoint
from nlp_ssl.training.config import StepPlan, Tracker, TrainConfig, plan_steps
from nlp_ssl.training.contract import Batch, LengthAware, ScoredTask, StepAware, Stream, StreamingTask, Task
from nlp_ssl.training.evaluation import evaluate
from nlp_ssl.training.loop import TrainingInterrupted, fit, make_accelerator, param_groups
from nlp_ssl.training.model_folders import BEST_DIR, BEST_SCORES, save_model_folder, write_model_folder
from nlp_ssl.training.state import TrainState

__all__ = [
    "BEST_DIR",
    "BEST_SCORES",
    "Batch",
    "BatchOrder",
    "LengthAware",
    "StepAware",
    "ScoredTask",
    "StepPlan",
    "Stream",
    "StreamingTask",
    "Task",
    "Tracker",
    "TrainConfig",
    "TrainState",
    "TrainingError",
    "TrainingInterrupted",
    "evaluate",
    "fit",
    "group_by_length",
    "make_accelerator",
    "param_groups",
    "plan_steps",
    "save_checkpoint",
    "save_model_folder",
    "write_model_folder",
]
