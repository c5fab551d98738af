"""Hyperparameter search with KerasTuner, each trial a tfft fit.

    from tfft.tuning import create_tuner, SearchSpace, Dimension
    tuner = create_tuner(config, tuner="bayesian", max_trials=20,
                         space=SearchSpace.default(config).updated({"batch_size": 32}))
    tuner.search()
    model = tuner.get_best_models(1)[0]        # tf-keras model, best weights loaded

or ``tune(config, ...)`` / ``tfft tune`` for search + results + ``DIR/best`` run directory.

KerasTuner imports Keras 3, which only a search should pay for: the search-space and
flag definitions (``tfft.tuning.options``) load eagerly, the rest on first use.
"""

from __future__ import annotations

import importlib

from tfft.tuning.options import TUNERS, Dimension, SearchSpace, search_space_from_args

_LAZY = {
    "TfftHyperModel": "tfft.tuning.hypermodels",
    "TfftTuner": "tfft.tuning.tuner",
    "BoundedHyperbandOracle": "tfft.tuning.tuner",
    "ScheduleSegment": "tfft.tuning.tuner",
    "create_tuner": "tfft.tuning.tuner",
    "make_oracle": "tfft.tuning.tuner",
    "tune_dir_of": "tfft.tuning.tuner",
    "SearchReport": "tfft.tuning.results",
    "SearchFailedError": "tfft.tuning.results",
    "TrialRecord": "tfft.tuning.results",
    "TuneResult": "tfft.tuning.search",
    "export_best": "tfft.tuning.search",
    "tune": "tfft.tuning.search",
}

__all__ = ["TUNERS", "Dimension", "SearchSpace", "search_space_from_args", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
