"""Local transport plans, shared by :class:`~robustkit.attacks.FWA`'s two methods.

A plan of shape (B, H, W, C, K) holds, for each pixel and channel, the mass moved by each
of K offsets ``(dy, dx)`` of a ``k x k`` window.
"""

import math

import tensorflow as tf


def kernel_offsets(kernel_size):
    """Pixel offsets ``(dy, dx)`` of a ``k x k`` local transport window.

    Offsets run from ``-((k - 1) // 2)`` to ``k // 2`` (the "same" padding
    convention: centred for odd ``k``, one more step down/right for even ``k``).

    Example:

    >>> kernel_offsets(3)[:2]
    [(-1, -1), (-1, 0)]
    >>> len(kernel_offsets(4))
    16
    """
    lo, hi = -((kernel_size - 1) // 2), kernel_size // 2
    return [(dy, dx) for dy in range(lo, hi + 1) for dx in range(lo, hi + 1)]


def shift(t, dy, dx, pad):
    """``out[:, h, w] = t[:, h + dy, w + dx]`` with zeros outside the image."""
    h, w = int(t.shape[1]), int(t.shape[2])
    padded = tf.pad(t, [[0, 0], [pad, pad], [pad, pad]] + [[0, 0]] * (t.shape.rank - 3))
    return padded[:, pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def transport_cost(plan, offsets):
    """Per-example cost ``sum_{i, o} plan[i, o] * ||o||_2`` of a local plan."""
    cost = tf.constant([math.hypot(dy, dx) for dy, dx in offsets], tf.float32)
    return tf.reduce_sum(plan * cost, axis=[1, 2, 3, 4])


def apply_plan(plan, offsets):
    """The image a local plan transports to: ``x'[j] = sum_o plan[j - o, o]``.

    ``plan`` has shape (B, H, W, C, K) with ``plan[b, h, w, c, o]`` the mass of
    pixel (h, w), channel c moved by offset ``o``.
    """
    pad = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    out = 0.0
    for k, (dy, dx) in enumerate(offsets):
        out = out + shift(plan[..., k], -dy, -dx, pad)
    return out
