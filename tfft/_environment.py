"""Environment variables that must be set before TensorFlow or transformers load.

Kept apart from ``tfft.backend`` so that ``import tfft`` can set them without paying
for importing TensorFlow (the readers in ``tfft.data`` do not need it).
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.keras = tf-keras, as transformers' TF classes need
os.environ.setdefault("USE_TORCH", "0")  # TensorFlow and torch in one process abort here
os.environ.setdefault("USE_TF", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
