"""Keras -> PyTorch weight port for the AutoAttack benchmark (benchmark-only; needs torch).

:func:`to_torch` walks a functional Keras model's layers in graph order and builds a
``torch.nn.Module`` that computes the same logits from NCHW inputs. It supports the
layers robustkit's ``small_cnn`` and ``resnet18`` use: Conv2D (``"valid"`` and TF's
``"same"`` padding, which pads asymmetrically when the stride is 2), BatchNormalization
(inference), ReLU / Activation("relu"), MaxPooling2D, Add, Flatten (NHWC order, as Keras
flattens), GlobalAveragePooling2D and Dense.
"""

import keras
import numpy as np
import torch
import torch.nn.functional as F


def _same_pad(size, kernel, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Op(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.kind = type(layer).__name__
        cfg = layer.get_config()
        self.cfg = cfg
        w = [torch.tensor(np.asarray(v)) for v in layer.get_weights()]
        if self.kind == "Conv2D":
            self.weight = torch.nn.Parameter(w[0].permute(3, 2, 0, 1).contiguous(), False)
            self.bias = torch.nn.Parameter(w[1], False) if cfg["use_bias"] else None
            self.stride = cfg["strides"][0]
            self.kernel = cfg["kernel_size"][0]
            self.padding = cfg["padding"]
            self.act = cfg.get("activation", "linear")
        elif self.kind == "Dense":
            self.weight = torch.nn.Parameter(w[0].t().contiguous(), False)
            self.bias = torch.nn.Parameter(w[1], False) if cfg["use_bias"] else None
            self.act = cfg.get("activation", "linear")
        elif self.kind == "BatchNormalization":
            names = [v.path.split("/")[-1] for v in layer.weights]
            get = dict(zip(names, w))
            gamma = get.get("gamma", torch.ones_like(get["moving_mean"]))
            beta = get.get("beta", torch.zeros_like(get["moving_mean"]))
            scale = gamma / torch.sqrt(get["moving_variance"] + cfg["epsilon"])
            self.register_buffer("scale", scale)
            self.register_buffer("shift", beta - get["moving_mean"] * scale)
        elif self.kind == "MaxPooling2D":
            self.pool = cfg["pool_size"][0]
            self.stride = cfg["strides"][0] if cfg["strides"] else self.pool
        elif self.kind == "Activation":
            if cfg["activation"] != "relu":
                raise ValueError(f"unsupported activation {cfg['activation']!r}")
        elif self.kind not in ("ReLU", "Add", "Flatten", "GlobalAveragePooling2D"):
            raise ValueError(f"unsupported layer {self.kind}")

    def forward(self, *xs):
        x = xs[0]
        if self.kind == "Conv2D":
            if self.padding == "same":
                ph = _same_pad(x.shape[2], self.kernel, self.stride)
                pw = _same_pad(x.shape[3], self.kernel, self.stride)
                x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
            x = F.conv2d(x, self.weight, self.bias, stride=self.stride)
            return F.relu(x) if self.act == "relu" else x
        if self.kind == "Dense":
            x = F.linear(x, self.weight, self.bias)
            return F.relu(x) if self.act == "relu" else x
        if self.kind == "BatchNormalization":
            return x * self.scale[None, :, None, None] + self.shift[None, :, None, None]
        if self.kind in ("ReLU", "Activation"):
            return F.relu(x)
        if self.kind == "MaxPooling2D":
            return F.max_pool2d(x, self.pool, self.stride)
        if self.kind == "Add":
            return sum(xs)
        if self.kind == "Flatten":  # Keras flattens NHWC
            return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return x.mean(dim=(2, 3))  # GlobalAveragePooling2D


class Ported(torch.nn.Module):
    """The Keras model's graph on NCHW torch tensors (inference mode)."""

    def __init__(self, model):
        super().__init__()
        self.input_name = model.inputs[0].name
        self.ops = torch.nn.ModuleList()
        self.wiring = []
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            node = layer._inbound_nodes[0]
            parents = [t._keras_history[0].name for t in node.input_tensors]
            self.ops.append(_Op(layer))
            self.wiring.append((layer.name, parents))
        self.input_layer = model.layers[0].name
        self.output_layer = model.layers[-1].name

    def forward(self, x):
        values = {self.input_layer: x}
        for op, (name, parents) in zip(self.ops, self.wiring):
            values[name] = op(*[values[p] for p in parents])
        return values[self.output_layer]


def to_torch(model):
    """A frozen, eval-mode torch copy of ``model`` taking NCHW float tensors."""
    net = Ported(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def nchw(x):
    """NHWC numpy -> NCHW float32 torch tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)), "float32"))


def nhwc(t):
    """NCHW torch tensor -> NHWC numpy."""
    return np.transpose(t.detach().cpu().numpy(), (0, 2, 3, 1))
