"""Build and compile a model for training: the task's head, adapters, recomputation, optimizer, loss and step.

Everything that creates variables (the model, its optimizer's slots, the loss metric) is
created in the cluster's strategy scope.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from tfft.backend import keras
from tfft.config import TrainConfig
from tfft.data import REGRESSION
from tfft.data.labels import LabelMap
from tfft.distribution import Cluster
from tfft.heads import head_config
from tfft.pooling import AUTO
from tfft.lora import LoraSettings, add_adapters, describe
from tfft.models import build_model, label_map_of, precision_scope
from tfft.recompute import recompute_encoder_layers
from tfft.training.losses import target_scale, task_loss
from tfft.training.optimization import create_optimizer
from tfft.training.train_step import install_train_step


def compile_model(model, config: TrainConfig, steps_per_epoch: int, targets: Optional[np.ndarray] = None,
                  optimizer: Optional[keras.optimizers.Optimizer] = None, cluster: Optional[Cluster] = None) -> None:
    """Attach tfft's optimizer and the task's loss to a model built by ``build_model``, in ``cluster``'s
    strategy (default: the strategy in scope).

    ``steps_per_epoch`` counts optimizer updates: with gradient accumulation a step takes
    ``gradient_accumulation_steps`` micro-batches (see ``tfft.training.train_step``). ``targets``:
    the training targets, which balanced class weights are computed from.
    ``optimizer`` replaces tfft's AdamW (still wrapped for fp16): the step tests use SGD, whose
    update is proportional to the gradient, where AdamW's first update (about the learning rate
    times the gradient's sign) would hide a gradient of the wrong scale.
    """
    cluster = cluster or Cluster.current()
    optimizer = optimizer or create_optimizer(
        config.learning_rate,
        total_steps=steps_per_epoch * config.epochs,
        warmup_fraction=config.warmup_fraction,
        weight_decay=config.weight_decay,
    )
    if config.precision == "fp16":  # float16 gradients underflow without loss scaling
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    loss = task_loss(config, label_map_of(model), model.config, targets)
    model.compile(optimizer=optimizer, loss=loss, jit_compile=config.xla)
    install_train_step(model, cluster.strategy, config.gradient_accumulation_steps, loss, bool(config.packing))


def create_model(config: TrainConfig, label_map: LabelMap, steps_per_epoch: int,
                 targets: Optional[np.ndarray] = None, cluster: Optional[Cluster] = None) -> keras.Model:
    """Build and compile the model (and optimizer) in ``cluster``'s strategy (default: the strategy in scope).

    ``steps_per_epoch`` counts optimizer updates (see :func:`compile_model`). ``targets``: the
    training targets (:func:`tfft.features.text_targets`), from which a regression model's target
    scale and balanced class weights are computed."""
    cluster = cluster or Cluster.current()
    with precision_scope(config.precision), cluster.scope():
        lora = LoraSettings.of(config)
        scale = target_scale(targets) if config.task == REGRESSION and config.normalize_targets else None
        model = build_model(config.task, label_map, config.model, dropout=config.dropout,
                            attention_dropout=config.attention_dropout, word_shapes=config.uses_word_shapes,
                            head=head_config(config.task, scale, config.pooling or AUTO))
        if lora is not None:
            add_adapters(model, lora, word_shapes=config.uses_word_shapes)
        if config.gradient_checkpointing:  # after any adapters, whose dropouts must recompute their masks too
            recompute_encoder_layers(model)
        print(describe(model, lora), flush=True)
        compile_model(model, config, steps_per_epoch, targets, cluster=cluster)
    return model
