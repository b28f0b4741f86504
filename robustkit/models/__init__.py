"""Model architectures; every classifier outputs logits.

Example:

>>> import robustkit as rk
>>> rk.models.small_cnn((8, 8, 1)).output_shape
(None, 10)
"""

from robustkit.models.small import small_cnn

__all__ = ["small_cnn"]
