"""Mutual-information estimators: bounds (pure functions), critics and estimator networks.

Example:

>>> from robustkit.estimators import bounds
>>> round(bounds.gaussian_mi(0.3, 20), 3)
0.943
"""

from robustkit.estimators import bounds

__all__ = ["bounds"]
