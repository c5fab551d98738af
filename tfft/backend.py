"""The one place that decides which TensorFlow/Keras tfft uses.

The ``transformers`` TF classes are built on tf-keras (Keras 2), while TensorFlow 2.21
installs Keras 3 as ``keras``. Setting ``TF_USE_LEGACY_KERAS`` before TensorFlow is
imported makes ``tf.keras`` resolve to tf-keras too, and ``USE_TORCH=0`` keeps
transformers from importing torch (TensorFlow and torch in one process abort here).
Every tfft module imports ``tf`` and ``keras`` from here, never on its own.
"""

from __future__ import annotations

import tfft._environment  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras"]
