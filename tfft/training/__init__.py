"""Training: data, model, fit and run directory, with the optimizer, the tasks' losses and the callbacks."""

from tfft.training.artifacts import TrainResult
from tfft.training.callbacks import BestWeightsCheckpoint, ValidationMetrics
from tfft.training.losses import masked_sparse_categorical_crossentropy, task_loss
from tfft.training.model import compile_model
from tfft.training.optimization import WarmupLinearDecay, create_optimizer
from tfft.training.trainer import train

__all__ = [
    "BestWeightsCheckpoint", "ValidationMetrics", "masked_sparse_categorical_crossentropy", "task_loss",
    "WarmupLinearDecay", "create_optimizer", "TrainResult", "compile_model", "train",
]
