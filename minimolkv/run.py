"""A training run's state and settings: what train.py advances and checkpoint.py saves.

Both train.py and checkpoint.py use these, so they live below both (no import
circle): Settings says how to train (the model's sizes are in model.Config),
Run holds everything a step depends on, by name.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from minimolkv import validate_run
from minimolkv.data import DataSpec
from minimolkv.model import Config


@dataclass(frozen=True)
class Settings:
    """How to train (the model's sizes are in model.Config)."""
    steps: int = 1500
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 30
    weight_decay: float = 0.1
    clip: float = 1.0
    eval_every: int = 50
    eval_batches: int = 8
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self):
        validate_run.settings(self)


@dataclass
class Run:
    """Everything a training step depends on, and what a checkpoint saves.

    params and opt are updated in place by each step; step counts the steps
    taken; rng draws the batches. last_checkpoint names the last checkpoint
    written or loaded, {"folder", "step", "steps"}, or is None."""
    params: dict                  # {name: array}, model.init's flat dict
    opt: dict                     # the AdamW state (optim.adamw_init)
    step: int                     # steps taken so far
    rng: np.random.Generator      # draws the training batches
    config: Config
    settings: Settings
    data: DataSpec                # which data (read again on resume)
    tokenizer: object             # the data's tokenizer (tokenizer.py)
    metrics: list                 # one dict per step: step, lr, train_loss, val_loss, ...
    prompt: str                   # a default prompt for `sample`
    last_checkpoint: dict | None = None
    on_first_save: Callable[[], None] | None = None   # a function checkpoint.save calls once, after the first save
                                                      # (train --overwrite: the old run's files go only then)
