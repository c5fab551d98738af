"""The KerasTuner ``HyperModel`` of a tfft run: a search space over ``TrainConfig`` options.

One class serves both tasks: the task, model checkpoint, data and every option that is
not searched come from the run's ``TrainConfig``; a trial's hyperparameters only replace
the searched options. Data are read and encoded once (``PreparedData``) and shared by
every trial.
"""

from __future__ import annotations

from typing import Optional

import keras_tuner as kt

from tfft.config import TrainConfig
from tfft.distribution import Cluster
from tfft.training.data import PreparedData
from tfft.training.model import create_model
from tfft.tuning.options import SearchSpace


class TfftHyperModel(kt.HyperModel):
    """Builds tfft's compiled tf-keras classifier for a set of hyperparameters.

    Narrow, widen or fix the space with ``space`` (a ``SearchSpace``) or by registering
    entries in a ``kt.HyperParameters`` given to the tuner (e.g. ``hp.Fixed("batch_size", 32)``):
    KerasTuner keeps a name's first registration, so those win over ``space``.
    """

    def __init__(self, config: TrainConfig, data: PreparedData, space: Optional[SearchSpace] = None,
                 name: Optional[str] = None, tunable: bool = True):
        super().__init__(name=name or config.task, tunable=tunable)
        self.config = config
        self.data = data
        self.space = space or SearchSpace.default(config)

    def config_for(self, hp: kt.HyperParameters) -> TrainConfig:
        """The run configuration of a trial (declares the searched options in ``hp``)."""
        return self.space.apply(hp, self.config)

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        # The whole space is known without building a model (see TfftTuner._populate_initial_space).
        self.config_for(hp)

    def build(self, hp: kt.HyperParameters):
        """The compiled model (optimizer schedule sized for the trial's batch size and epochs)."""
        config = self.config_for(hp)
        cluster = Cluster.of(config)  # the trials' strategy
        _, steps_per_epoch = self.data.train_dataset(config, cluster)
        return create_model(config, self.data.label_map, steps_per_epoch, self.data.targets, cluster)
