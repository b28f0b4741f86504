"""Architectures: shapes, parameter counts against independent arithmetic and the
published figures, `.keras` round trip, bad input."""

import os

import keras
import numpy as np
import pytest

import robustkit as rk


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# ---------------------------------------------------------------- arithmetic
# Parameter counts derived layer by layer from the papers' architectures
# (trainable parameters: conv kernels, BN gamma/beta, dense kernel + bias).
def _conv(k, c_in, c_out, bias=False):
    return k * k * c_in * c_out + (c_out if bias else 0)


def _bn(c):
    return 2 * c


def _resnet18_count(c=64, c_in=3, classes=10):
    total = _conv(3, c_in, c) + _bn(c)  # CIFAR stem: conv3x3 + BN
    prev = c
    for stage in range(4):
        width = c * 2**stage
        for _block in range(2):
            total += _conv(3, prev, width) + _bn(width) + _conv(3, width, width) + _bn(width)
            if prev != width:  # projection shortcut: 1x1 conv + BN
                total += _conv(1, prev, width) + _bn(width)
            prev = width
    return total + prev * classes + classes


def _preact_resnet18_count(c=64, c_in=3, classes=10):
    total = _conv(3, c_in, c)  # bare stem conv
    prev = c
    for stage in range(4):
        width = c * 2**stage
        for _block in range(2):
            total += _bn(prev) + _conv(3, prev, width) + _bn(width) + _conv(3, width, width)
            if prev != width:  # 1x1 conv shortcut, no BN
                total += _conv(1, prev, width)
            prev = width
    return total + _bn(prev) + prev * classes + classes  # final BN-ReLU


def _vgg19_count(c=64, c_in=3, classes=10):
    cfg = [1, 1, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8]
    total, prev = 0, c_in
    for mult in cfg:
        total += _conv(3, prev, c * mult, bias=True) + _bn(c * mult)
        prev = c * mult
    return total + prev * classes + classes


def _wrn_count(depth, k, c_in=3, classes=10):
    n = (depth - 4) // 6
    total, prev = _conv(3, c_in, 16), 16
    for group in range(3):
        width = 16 * k * 2**group
        for _block in range(n):
            total += _bn(prev) + _conv(3, prev, width) + _bn(width) + _conv(3, width, width)
            if prev != width:
                total += _conv(1, prev, width)
            prev = width
    return total + _bn(prev) + prev * classes + classes


def test_arithmetic_matches_published_counts():
    # The figures quoted for the reference PyTorch models (kuangliu/pytorch-cifar
    # ResNet18 and VGG('VGG19'); the TRADES/MART WideResNet-34-10).
    assert _resnet18_count() == 11_173_962
    assert _vgg19_count() == 20_040_522
    assert _wrn_count(34, 10) == 46_160_474
    # PreAct-ResNet-18 without the final BN is the often-quoted 11,171,146.
    assert _preact_resnet18_count() - _bn(512) == 11_171_146


FULL = [
    (rk.models.resnet18, {}, 11_173_962),
    (rk.models.preact_resnet18, {}, _preact_resnet18_count()),
    (rk.models.vgg19, {}, 20_040_522),
    (rk.models.wide_resnet, {"depth": 34, "width": 10}, 46_160_474),
]


@pytest.mark.parametrize(
    "builder,kwargs,expected", FULL, ids=lambda v: getattr(v, "__name__", None)
)
def test_full_size_parameter_counts(builder, kwargs, expected):
    model = builder(**kwargs)
    assert _trainable(model) == expected
    assert model.output_shape == (None, 10)


NARROW = [
    (rk.models.resnet18, {"base_filters": 8}, _resnet18_count(8, 1, 7)),
    (rk.models.preact_resnet18, {"base_filters": 8}, _preact_resnet18_count(8, 1, 7)),
    (rk.models.vgg19, {"base_filters": 8}, _vgg19_count(8, 1, 7)),
    (rk.models.wide_resnet, {"depth": 16, "width": 2}, _wrn_count(16, 2, 1, 7)),
]


@pytest.mark.parametrize(
    "builder,kwargs,expected", NARROW, ids=lambda v: getattr(v, "__name__", None)
)
def test_narrow_models_shapes_and_counts(builder, kwargs, expected):
    # MNIST-sized grey input and 7 classes: the width and input arguments are honoured.
    model = builder(input_shape=(28, 28, 1), num_classes=7, **kwargs)
    assert _trainable(model) == expected
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")
    logits = model(x, training=False)
    assert tuple(logits.shape) == (3, 7)
    assert np.all(np.isfinite(logits.numpy()))
    # logits, not probabilities: no softmax at the end
    assert not np.allclose(np.sum(logits.numpy(), axis=-1), 1.0)
    assert model.layers[-1].get_config().get("activation") in (None, "linear")


def test_cifar_stem_keeps_resolution():
    # CIFAR stem: 3x3 stride-1 conv and no max-pool, so stage 1 runs at 32x32
    # (an ImageNet stem would be at 8x8 there).
    model = rk.models.resnet18(base_filters=4)
    assert model.get_layer("stem_conv").kernel_size == (3, 3)
    assert model.get_layer("stem_conv").strides == (1, 1)
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers)
    assert tuple(model.get_layer("stage1_block2_out").output.shape) == (None, 32, 32, 4)
    assert tuple(model.get_layer("stage4_block2_out").output.shape) == (None, 4, 4, 32)


@pytest.mark.parametrize(
    "builder,kwargs",
    [
        (rk.models.resnet18, {"base_filters": 4}),
        (rk.models.preact_resnet18, {"base_filters": 4}),
        (rk.models.vgg19, {"base_filters": 4}),
        (rk.models.wide_resnet, {"depth": 10, "width": 1}),
    ],
    ids=["resnet18", "preact_resnet18", "vgg19", "wide_resnet"],
)
def test_keras_round_trip_identical_logits(builder, kwargs, tmp_path):
    model = builder(input_shape=(8, 8, 1), **kwargs)
    x = np.random.default_rng(1).uniform(size=(16, 8, 8, 1)).astype("float32")
    # Random weights and BatchNorm moving statistics, so a round trip that lost
    # any of them (or reset BN to its initial state) would change the logits.
    rng = np.random.default_rng(2)
    for w in model.weights:
        values = rng.normal(0.0, 0.2, size=w.shape)
        if "moving_variance" in w.path:
            values = rng.uniform(0.5, 1.5, size=w.shape)
        w.assign(values.astype("float32"))
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    before = model(x, training=False).numpy()
    np.testing.assert_array_equal(before, reloaded(x, training=False).numpy())
    # the BN statistics matter: inference and training mode differ
    assert not np.allclose(before, model(x, training=True).numpy(), atol=1e-3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="`depth`"):
        rk.models.wide_resnet(depth=33, width=1)
    with pytest.raises(ValueError, match="`base_filters`"):
        rk.models.resnet18(base_filters=0)
    with pytest.raises(ValueError, match="`input_shape`"):
        rk.models.vgg19(input_shape=(32, 32))
    with pytest.raises(ValueError, match="`num_classes`"):
        rk.models.preact_resnet18(num_classes=1)
