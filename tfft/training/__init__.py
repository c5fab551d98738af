"""Training: optimizer and schedule, the tasks' losses, callbacks, and the fit orchestration."""

from tfft.training.callbacks import BestWeightsCheckpoint, ValidationMetrics
from tfft.training.losses import masked_sparse_categorical_crossentropy, task_loss
from tfft.training.optimization import WarmupLinearDecay, create_optimizer
from tfft.training.trainer import TrainResult, compile_model, train

__all__ = [
    "BestWeightsCheckpoint", "ValidationMetrics", "masked_sparse_categorical_crossentropy", "task_loss",
    "WarmupLinearDecay", "create_optimizer", "TrainResult", "compile_model", "train",
]
