"""A model zoo built with ``onnx.helper``: real architectures, seeded random weights.

Tests, benchmarks and the demo need models with the published layer shapes of
well-known networks. Trained weights do not change how fast a runtime is, the
architecture does, so every model here is built node by node with seeded
random weights: nothing is downloaded and torch is not needed.

    import zoo
    model = zoo.build("mobilenetv2", seed=0)          # onnx.ModelProto
    zoo.save("resnet50", "out/resnet50.onnx")         # writes the file
    feeds = zoo.sample_inputs(model)                  # {"input": float32[1, 3, 224, 224]}

    python tests/zoo.py mobilenetv2 out/mobilenetv2.onnx [--seed N] [--set key=value]
    python tests/zoo.py --list

Weights are scaled so that activations keep a sane magnitude through the whole
network (He/LeCun initialisation, BatchNorm statistics that neither blow up nor
squash, residual branches scaled down): outputs are finite and vary with the
input, so comparing two runtimes' outputs means something.

Models are opset 17 and IR version 8, float32, batch 1 unless a builder says
otherwise. The ``light_*`` models are the reduced ImageNet networks the onnx
wheel ships for its backend tests (opset 9), with their constant weights
replaced by seeded random ones (see :func:`materialize_light`).

This module imports numpy and onnx only; no inference runtime.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "NAMES",
    "LIGHT_ARCHS",
    "DEFAULT_BATCH",
    "DEFAULT_DIM",
    "build",
    "save",
    "sample_inputs",
    "count_params",
    "materialize_light",
    "light_path",
    "main",
]

OPSET = 17
IR_VERSION = 8  # the IR version that came with opset 17; read by every runtime we target

#: Size given to a dynamic leading (batch) dimension by :func:`sample_inputs`.
DEFAULT_BATCH = 1
#: Size given to any other dynamic dimension (spatial, sequence) by :func:`sample_inputs`.
DEFAULT_DIM = 64

#: The networks the onnx wheel ships under ``onnx/backend/test/data/light``.
LIGHT_ARCHS = (
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
)

_FLOAT = TensorProto.FLOAT
_INT64 = TensorProto.INT64


# --------------------------------------------------------------------------- graph builder


def _normal(rng: np.random.Generator, shape: Sequence[int], std: float, mean: float = 0.0) -> np.ndarray:
    """float32 N(mean, std^2), computed in place (BERT and VGG weights run to hundreds of MB)."""
    array = rng.standard_normal(tuple(shape), dtype=np.float32)
    array *= np.float32(std)
    if mean:
        array += np.float32(mean)
    return array


_IO_NAMES = ("input", "input_ids", "attention_mask", "output", "last_hidden_state")


class _Graph:
    """Accumulates nodes and initializers; hands out unique tensor names."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._used: set[str] = set(_IO_NAMES)  # graph inputs and outputs keep their plain names
        self._consts: dict[tuple, str] = {}

    def name(self, base: str) -> str:
        name, i = base, 1
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    def init(self, base: str, array: np.ndarray) -> str:
        name = self.name(base)
        if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn scalars into [1])
            array = np.ascontiguousarray(array)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def const(self, value: Any, dtype: Any = np.float32) -> str:
        """A small shared constant (scalars, shapes, axes), created once per value."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            label = "_".join(str(v) for v in array.ravel()[:4]).replace("-", "m").replace(".", "p")
            self._consts[key] = self.init(f"const_{label}" if label else "const", array)
        return self._consts[key]

    def normal(self, base: str, shape: Sequence[int], std: float, mean: float = 0.0) -> str:
        return self.init(base, _normal(self.rng, shape, std, mean))

    def op(
        self, op_type: str, inputs: Sequence[str], base: str | None = None, n_out: int = 1, **attrs: Any
    ) -> Any:
        """Add a node; returns its output name (a list of names when ``n_out > 1``)."""
        base = base or op_type.lower()
        outs = [self.name(base if n_out == 1 else f"{base}_out{i}") for i in range(n_out)]
        self.nodes.append(
            helper.make_node(op_type, list(inputs), outs, name=self.name(f"{base}/{op_type}"), **attrs)
        )
        return outs[0] if n_out == 1 else outs

    def rename(self, tensor: str, new: str) -> str:
        """Rename ``tensor`` (typically the last output) to ``new``, e.g. the graph output name."""
        self._used.add(new)
        for node in self.nodes:
            for field in (node.input, node.output):
                for i, name in enumerate(field):
                    if name == tensor:
                        field[i] = new
        return new

    def model(
        self,
        name: str,
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        doc: str,
        seed: int,
        kwargs: dict[str, Any],
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.inits)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="autoinfer.zoo",
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        _stamp(model, name, seed, kwargs)
        return model


def _stamp(model: onnx.ModelProto, name: str, seed: int, kwargs: dict[str, Any]) -> None:
    meta = {"autoinfer.zoo.name": name, "autoinfer.zoo.seed": str(seed)}
    meta.update({f"autoinfer.zoo.{k}": str(v) for k, v in sorted(kwargs.items())})
    helper.set_model_props(model, meta)


def _value_info(name: str, elem_type: int, shape: Sequence[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, list(shape))


# --------------------------------------------------------------------------- CNN blocks

_BN_EPS = 1e-5


def _conv_weight(rng: np.random.Generator, cout: int, cin: int, k: int, rectified: bool) -> np.ndarray:
    """He-scaled conv filters [cout, cin, k, k]; zero-sum over each filter when ``cin > 1``.

    Inputs after a ReLU share a positive mean, and filters that respond to it
    make a deep random network map every input to nearly the same output, so
    the filters are centred. Centred filters pass on only the variance of a
    rectified input (about 0.34 of its mean square, against He's 0.5), so the
    gain before a rectifier is raised from 2 to 2.9.
    """
    centered = cin > 1
    std = (
        math.sqrt((2.9 if centered else 2.0) / (cin * k * k)) if rectified else math.sqrt(1.0 / (cin * k * k))
    )
    w = rng.standard_normal((cout, cin, k, k), dtype=np.float32) * np.float32(std)
    if centered:
        w -= w.mean(axis=(1, 2, 3), keepdims=True)
    return w


def _conv_bn(
    g: _Graph,
    x: str,
    cin: int,
    cout: int,
    k: int,
    *,
    stride: int = 1,
    group: int = 1,
    act: str | None = None,
    gain: float = 1.0,
    fold_bn: bool = True,
    name: str,
) -> str:
    """Conv (no bias) + BatchNorm + activation, the unit of torchvision's CNNs.

    The conv weight is He-scaled for the activation that follows; the BatchNorm
    statistics are drawn near identity and ``gain`` scales its gamma (used to
    damp residual branches). With ``fold_bn`` the BatchNorm is folded into the
    conv (as exporters do); without it the same weights appear as a Conv and a
    BatchNormalization node. The random draws are the same either way, so both
    forms compute the same function.
    """
    rng = g.rng
    w = _conv_weight(rng, cout, cin // group, k, rectified=act is not None)
    gamma = (rng.uniform(0.9, 1.1, cout) * gain).astype(np.float32)
    beta = (rng.standard_normal(cout) * 0.05).astype(np.float32)
    mean = (rng.standard_normal(cout) * 0.05).astype(np.float32)
    var = rng.uniform(0.9, 1.1, cout).astype(np.float32)
    attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[(k - 1) // 2] * 4, group=group)
    if fold_bn:
        scale = gamma / np.sqrt(var + np.float32(_BN_EPS))
        wf = g.init(f"{name}.weight", w * scale[:, None, None, None])
        bf = g.init(f"{name}.bias", beta - mean * scale)
        y = g.op("Conv", [x, wf, bf], name, **attrs)
    else:
        y = g.op("Conv", [x, g.init(f"{name}.weight", w)], name, **attrs)
        y = g.op(
            "BatchNormalization",
            [
                y,
                g.init(f"{name}.bn.weight", gamma),
                g.init(f"{name}.bn.bias", beta),
                g.init(f"{name}.bn.running_mean", mean),
                g.init(f"{name}.bn.running_var", var),
            ],
            f"{name}.bn",
            epsilon=_BN_EPS,
        )
    return _act(g, y, act, name)


def _act(g: _Graph, x: str, act: str | None, name: str) -> str:
    if act is None:
        return x
    if act == "relu":
        return g.op("Relu", [x], f"{name}.relu")
    if act == "relu6":  # how exporters write ReLU6
        return g.op("Clip", [x, g.const(0.0), g.const(6.0)], f"{name}.relu6")
    if act == "silu":  # x * sigmoid(x), as exported before opset 22's Swish
        return g.op("Mul", [x, g.op("Sigmoid", [x], f"{name}.sigmoid")], f"{name}.silu")
    raise ValueError(f"unknown activation {act!r}")


def _conv(
    g: _Graph, x: str, cin: int, cout: int, k: int, *, std: float, name: str, bias_mean: float = 0.0
) -> str:
    """A plain Conv with bias (no BatchNorm), as in squeeze-excitation blocks."""
    w = g.normal(f"{name}.weight", (cout, cin, k, k), std)
    b = g.normal(f"{name}.bias", (cout,), 0.05, bias_mean)
    return g.op("Conv", [x, w, b], name, kernel_shape=[k, k], pads=[(k - 1) // 2] * 4)


def _classifier(g: _Graph, x: str, cin: int, classes: int, name: str = "fc", gain: float = 1.0) -> str:
    """GlobalAveragePool + Flatten + Gemm, as exported from torchvision."""
    x = g.op("GlobalAveragePool", [x], "avgpool")
    x = g.op("Flatten", [x], "flatten", axis=1)
    w = g.rng.standard_normal((classes, cin), dtype=np.float32) * np.float32(gain * math.sqrt(1.0 / cin))
    w = g.init(f"{name}.weight", w - w.mean(axis=1, keepdims=True))  # zero-sum, see _conv_weight
    b = g.normal(f"{name}.bias", (classes,), 0.01)
    return g.op("Gemm", [x, w, b], name, transB=1)


def _image_model(
    g: _Graph,
    name: str,
    x_in: str,
    y: str,
    batch: int,
    size: int,
    classes: int,
    doc: str,
    seed: int,
    kwargs: dict[str, Any],
) -> onnx.ModelProto:
    g.rename(y, "output")
    return g.model(
        name,
        [_value_info(x_in, _FLOAT, [batch, 3, size, size])],
        [_value_info("output", _FLOAT, [batch, classes])],
        doc,
        seed,
        kwargs,
    )


# --------------------------------------------------------------------------- builders


def _tiny(*, seed: int = 0, features: int = 16) -> onnx.ModelProto:
    """x[1, F] -> MatMul + Add + Relu -> [1, F]: almost no compute, for per-call overhead."""
    g = _Graph(seed)
    w = g.normal("fc.weight", (features, features), math.sqrt(2.0 / features))
    b = g.normal("fc.bias", (features,), 0.1)
    y = g.op("Relu", [g.op("Add", [g.op("MatMul", ["input", w], "fc.matmul"), b], "fc.add")], "relu")
    g.rename(y, "output")
    return g.model(
        "tiny",
        [_value_info("input", _FLOAT, [1, features])],
        [_value_info("output", _FLOAT, [1, features])],
        "Tiny MLP (MatMul+Add+Relu).",
        seed,
        {"features": features},
    )


_MBV2_SETTINGS = [  # expand ratio t, channels c, repeats n, first stride s (torchvision)
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def _mobilenetv2(
    *, seed: int = 0, batch: int = 1, size: int = 224, classes: int = 1000, fold_bn: bool = True
) -> onnx.ModelProto:
    """MobileNetV2 1.0 (Sandler et al. 2018; torchvision layout, 3.5M parameters)."""
    g = _Graph(seed)
    x = _conv_bn(g, "input", 3, 32, 3, stride=2, act="relu6", fold_bn=fold_bn, name="features.0")
    cin, idx = 32, 1
    for t, c, n, s in _MBV2_SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden, p = cin * t, f"features.{idx}"
            residual = stride == 1 and cin == c
            y = x
            if t != 1:
                y = _conv_bn(g, y, cin, hidden, 1, act="relu6", fold_bn=fold_bn, name=f"{p}.expand")
            y = _conv_bn(
                g,
                y,
                hidden,
                hidden,
                3,
                stride=stride,
                group=hidden,
                act="relu6",
                fold_bn=fold_bn,
                name=f"{p}.dw",
            )
            y = _conv_bn(
                g, y, hidden, c, 1, gain=0.5 if residual else 1.0, fold_bn=fold_bn, name=f"{p}.project"
            )
            x = g.op("Add", [x, y], f"{p}.add") if residual else y
            cin, idx = c, idx + 1
    x = _conv_bn(g, x, cin, 1280, 1, act="relu6", fold_bn=fold_bn, name=f"features.{idx}")
    y = _classifier(g, x, 1280, classes, "classifier")
    return _image_model(
        g,
        "mobilenetv2",
        "input",
        y,
        batch,
        size,
        classes,
        "MobileNetV2 1.0, seeded random weights.",
        seed,
        dict(batch=batch, size=size, classes=classes, fold_bn=fold_bn),
    )


def _resnet50(
    *, seed: int = 0, batch: int = 1, size: int = 224, classes: int = 1000, fold_bn: bool = True
) -> onnx.ModelProto:
    """ResNet-50 v1.5 (stride on the 3x3 conv; torchvision layout, 25.6M parameters)."""
    g = _Graph(seed)
    x = _conv_bn(g, "input", 3, 64, 7, stride=2, act="relu", fold_bn=fold_bn, name="conv1")
    x = g.op("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, (width, blocks, first_stride) in enumerate(
        [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], 1
    ):
        for i in range(blocks):
            stride, p, cout = (first_stride if i == 0 else 1), f"layer{stage}.{i}", width * 4
            projection = stride != 1 or cin != cout
            y = _conv_bn(g, x, cin, width, 1, act="relu", fold_bn=fold_bn, name=f"{p}.conv1")
            y = _conv_bn(g, y, width, width, 3, stride=stride, act="relu", fold_bn=fold_bn, name=f"{p}.conv2")
            # Residual branches are damped (as zero-init-residual does, but not to zero)
            # so that the sum of 16 blocks does not grow the activations out of range.
            y = _conv_bn(
                g, y, width, cout, 1, gain=1.0 if projection else 0.35, fold_bn=fold_bn, name=f"{p}.conv3"
            )
            shortcut = x
            if projection:
                shortcut = _conv_bn(
                    g, x, cin, cout, 1, stride=stride, fold_bn=fold_bn, name=f"{p}.downsample"
                )
            x = g.op("Relu", [g.op("Add", [shortcut, y], f"{p}.add")], f"{p}.relu")
            cin = cout
    y = _classifier(g, x, 2048, classes, "fc", gain=6.0)
    return _image_model(
        g,
        "resnet50",
        "input",
        y,
        batch,
        size,
        classes,
        "ResNet-50 v1.5, seeded random weights.",
        seed,
        dict(batch=batch, size=size, classes=classes, fold_bn=fold_bn),
    )


_EFFNET_B0 = [  # expand ratio, kernel, first stride, in channels, out channels, repeats (torchvision)
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]


def _efficientnet_b0(
    *, seed: int = 0, batch: int = 1, size: int = 224, classes: int = 1000, fold_bn: bool = True
) -> onnx.ModelProto:
    """EfficientNet-B0 (Tan & Le 2019; torchvision layout, 5.3M parameters).

    MBConv blocks with SiLU written as x * Sigmoid(x) and squeeze-excitation
    through GlobalAveragePool, as torch exports them.
    """
    g = _Graph(seed)
    x = _conv_bn(g, "input", 3, 32, 3, stride=2, act="silu", fold_bn=fold_bn, name="features.0")
    idx = 1
    for expand, k, first_stride, block_in, cout, repeats in _EFFNET_B0:
        for i in range(repeats):
            cin, stride, p = (
                (block_in if i == 0 else cout),
                (first_stride if i == 0 else 1),
                f"features.{idx}.{i}",
            )
            hidden, squeeze = cin * expand, max(1, cin // 4)
            residual = stride == 1 and cin == cout
            y = x
            if expand != 1:
                y = _conv_bn(g, y, cin, hidden, 1, act="silu", fold_bn=fold_bn, name=f"{p}.expand")
            y = _conv_bn(
                g,
                y,
                hidden,
                hidden,
                k,
                stride=stride,
                group=hidden,
                act="silu",
                fold_bn=fold_bn,
                name=f"{p}.dw",
            )
            s = g.op("GlobalAveragePool", [y], f"{p}.se.avgpool")
            s = _act(
                g,
                _conv(g, s, hidden, squeeze, 1, std=math.sqrt(2.0 / hidden), name=f"{p}.se.fc1"),
                "silu",
                f"{p}.se.fc1",
            )
            # Bias the gate open (sigmoid near 0.9) so stacked SE blocks do not shrink the signal.
            s = _conv(
                g, s, squeeze, hidden, 1, std=math.sqrt(1.0 / squeeze), bias_mean=2.0, name=f"{p}.se.fc2"
            )
            y = g.op("Mul", [y, g.op("Sigmoid", [s], f"{p}.se.sigmoid")], f"{p}.se.scale")
            # SiLU passes less energy than ReLU; the linear projection makes up for it.
            y = _conv_bn(
                g, y, hidden, cout, 1, gain=0.5 if residual else 1.1, fold_bn=fold_bn, name=f"{p}.project"
            )
            x = g.op("Add", [x, y], f"{p}.add") if residual else y
        idx += 1
    x = _conv_bn(g, x, 320, 1280, 1, act="silu", fold_bn=fold_bn, name=f"features.{idx}")
    y = _classifier(g, x, 1280, classes, "classifier")
    return _image_model(
        g,
        "efficientnet_b0",
        "input",
        y,
        batch,
        size,
        classes,
        "EfficientNet-B0, seeded random weights.",
        seed,
        dict(batch=batch, size=size, classes=classes, fold_bn=fold_bn),
    )


def _layer_norm(g: _Graph, x: str, hidden: int, name: str) -> str:
    gamma = g.normal(f"{name}.weight", (hidden,), 0.05, 1.0)
    beta = g.normal(f"{name}.bias", (hidden,), 0.02)
    return g.op("LayerNormalization", [x, gamma, beta], name, axis=-1, epsilon=1e-12)


def _linear(g: _Graph, x: str, cin: int, cout: int, name: str, gain: float = 1.0) -> str:
    w = g.normal(f"{name}.weight", (cin, cout), gain / math.sqrt(cin))
    b = g.normal(f"{name}.bias", (cout,), 0.02)
    return g.op("Add", [g.op("MatMul", [x, w], f"{name}.matmul"), b], f"{name}.add")


def _bert_embeddings(g: _Graph, vocab: int, hidden: int, max_position: int, seq_len: int) -> str:
    """Word, position and token-type (0 throughout) embeddings, summed and normalised."""
    words = g.op(
        "Gather",
        [g.normal("embeddings.word_embeddings.weight", (vocab, hidden), 0.02), "input_ids"],
        "embeddings.word",
    )
    positions = g.op(
        "Gather",
        [
            g.normal("embeddings.position_embeddings.weight", (max_position, hidden), 0.02),
            g.init("embeddings.position_ids", np.arange(seq_len, dtype=np.int64)[None]),
        ],
        "embeddings.position",
    )
    types = g.op(
        "Gather",
        [
            g.normal("embeddings.token_type_embeddings.weight", (2, hidden), 0.02),
            g.init("embeddings.token_type_ids", np.zeros((1, seq_len), np.int64)),
        ],
        "embeddings.token_type",
    )
    x = g.op("Add", [g.op("Add", [words, positions], "embeddings.add"), types], "embeddings.add")
    return _layer_norm(g, x, hidden, "embeddings.LayerNorm")


def _bert_mask(g: _Graph) -> str:
    """The additive attention mask: (1 - mask) * -10000, broadcast over heads and query positions."""
    m = g.op("Cast", ["attention_mask"], "extended_mask.cast", to=_FLOAT)
    m = g.op("Sub", [g.const(1.0), m], "extended_mask.sub")
    m = g.op("Mul", [m, g.const(-10000.0)], "extended_mask.mul")
    return g.op("Unsqueeze", [m, g.const([1, 2], np.int64)], "extended_mask")


def _bert_layer(
    g: _Graph,
    x: str,
    p: str,
    hidden: int,
    heads: int,
    inter: int,
    mask: str | None,
    split_heads: str,
    merge_heads: str,
) -> str:
    """One encoder layer: self-attention over ``heads`` heads, then the erf-GELU feed-forward."""
    head_dim = hidden // heads
    q, k, v = (
        g.op(
            "Reshape",
            [_linear(g, x, hidden, hidden, f"{p}.attention.{n}"), split_heads],
            f"{p}.{n}.split",
        )
        for n in ("query", "key", "value")
    )
    q = g.op("Transpose", [q], f"{p}.query.t", perm=[0, 2, 1, 3])
    k = g.op("Transpose", [k], f"{p}.key.t", perm=[0, 2, 3, 1])
    v = g.op("Transpose", [v], f"{p}.value.t", perm=[0, 2, 1, 3])
    s = g.op("Div", [g.op("MatMul", [q, k], f"{p}.scores"), g.const(math.sqrt(head_dim))], f"{p}.scaled")
    if mask is not None:
        s = g.op("Add", [s, mask], f"{p}.masked")
    a = g.op("Softmax", [s], f"{p}.probs", axis=-1)
    c = g.op("Transpose", [g.op("MatMul", [a, v], f"{p}.context")], f"{p}.context.t", perm=[0, 2, 1, 3])
    c = g.op("Reshape", [c, merge_heads], f"{p}.context.merge")
    o = _linear(g, c, hidden, hidden, f"{p}.attention.output")
    x = _layer_norm(g, g.op("Add", [o, x], f"{p}.attention.residual"), hidden, f"{p}.attention.LayerNorm")
    h = _linear(g, x, hidden, inter, f"{p}.intermediate")
    erf = g.op("Erf", [g.op("Div", [h, g.const(math.sqrt(2.0))], f"{p}.gelu.div")], f"{p}.gelu.erf")
    h = g.op(
        "Mul",
        [
            g.op("Mul", [h, g.op("Add", [erf, g.const(1.0)], f"{p}.gelu.add")], f"{p}.gelu.mul"),
            g.const(0.5),
        ],
        f"{p}.gelu",
    )
    o = _linear(g, h, inter, hidden, f"{p}.output", gain=math.sqrt(2.0))
    x = _layer_norm(g, g.op("Add", [o, x], f"{p}.output.residual"), hidden, f"{p}.output.LayerNorm")
    return x


def _bert(
    *,
    seed: int = 0,
    layers: int = 12,
    seq_len: int = 128,
    hidden: int = 768,
    heads: int = 12,
    vocab: int = 30522,
    intermediate: int | None = None,
    max_position: int = 512,
    batch: int = 1,
    attention_mask: bool = True,
    _name: str = "bert_base",
) -> onnx.ModelProto:
    """A BERT encoder (Devlin et al. 2019) as Hugging Face exports it, without the pooler.

    Inputs ``input_ids`` int64 [batch, seq_len] and (with ``attention_mask``)
    ``attention_mask`` int64 [batch, seq_len] (1 = attend, 0 = padding).
    Output ``last_hidden_state`` float32 [batch, seq_len, hidden]. Word,
    position and token-type embeddings are Gathers (token type 0 throughout),
    attention is MatMul/Softmax over ``heads`` heads and GELU is the exact
    erf form. BERT-base (the defaults) has 108.9M parameters, 23.4M of them in
    the word embedding (the published 110M includes the 0.6M pooler).
    """
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    if seq_len > max_position:
        raise ValueError(f"seq_len ({seq_len}) exceeds max_position ({max_position})")
    kwargs = dict(
        layers=layers,
        seq_len=seq_len,
        hidden=hidden,
        heads=heads,
        vocab=vocab,
        intermediate=intermediate,
        max_position=max_position,
        batch=batch,
        attention_mask=attention_mask,
    )
    inter = intermediate or 4 * hidden
    head_dim = hidden // heads
    g = _Graph(seed)
    x = _bert_embeddings(g, vocab, hidden, max_position, seq_len)
    mask = _bert_mask(g) if attention_mask else None
    split_heads = g.const([0, 0, heads, head_dim], np.int64)
    merge_heads = g.const([0, 0, hidden], np.int64)
    for i in range(layers):
        x = _bert_layer(g, x, f"encoder.layer.{i}", hidden, heads, inter, mask, split_heads, merge_heads)

    g.rename(x, "last_hidden_state")
    inputs = [_value_info("input_ids", _INT64, [batch, seq_len])]
    if attention_mask:
        inputs.append(_value_info("attention_mask", _INT64, [batch, seq_len]))
    return g.model(
        _name,
        inputs,
        [_value_info("last_hidden_state", _FLOAT, [batch, seq_len, hidden])],
        f"BERT encoder ({layers} layers, hidden {hidden}, {heads} heads), seeded random weights.",
        seed,
        kwargs,
    )


def _transformer_small(
    *,
    seed: int = 0,
    layers: int = 2,
    seq_len: int = 32,
    hidden: int = 128,
    heads: int = 4,
    vocab: int = 1000,
    intermediate: int | None = None,
    max_position: int = 64,
    batch: int = 1,
    attention_mask: bool = True,
) -> onnx.ModelProto:
    """The BERT builder at a small size (2 layers, hidden 128, 4 heads, seq 32, vocab 1000)."""
    return _bert(
        seed=seed,
        layers=layers,
        seq_len=seq_len,
        hidden=hidden,
        heads=heads,
        vocab=vocab,
        intermediate=intermediate,
        max_position=max(max_position, seq_len),
        batch=batch,
        attention_mask=attention_mask,
        _name="transformer_small",
    )


def _recurrent(
    op_type: str, *, seed: int, seq_len: int, batch: int, input_size: int, hidden: int, classes: int
) -> onnx.ModelProto:
    gates = {"LSTM": 4, "GRU": 3}[op_type]
    g = _Graph(seed)
    bound = 1.0 / math.sqrt(hidden)  # PyTorch's default uniform(-1/sqrt(H), 1/sqrt(H))

    def uniform(base: str, shape: tuple[int, ...]) -> str:
        return g.init(base, g.rng.uniform(-bound, bound, shape).astype(np.float32))

    w = uniform(f"{op_type.lower()}.W", (1, gates * hidden, input_size))
    r = uniform(f"{op_type.lower()}.R", (1, gates * hidden, hidden))
    b = uniform(f"{op_type.lower()}.B", (1, 2 * gates * hidden))
    attrs: dict[str, Any] = {"hidden_size": hidden}
    if op_type == "GRU":
        attrs["linear_before_reset"] = 1  # PyTorch's GRU formulation
    _, h_last = g.op(op_type, ["input", w, r, b], op_type.lower(), n_out=2, **attrs)
    h_last = g.op("Squeeze", [h_last, g.const([0], np.int64)], "h_last")  # [1, batch, H] -> [batch, H]
    wf = g.normal("head.weight", (classes, hidden), math.sqrt(1.0 / hidden) * 3.0)
    bf = g.normal("head.bias", (classes,), 0.01)
    y = g.op("Gemm", [h_last, wf, bf], "head", transB=1)
    g.rename(y, "output")
    name = op_type.lower()
    return g.model(
        name,
        [_value_info("input", _FLOAT, [seq_len, batch, input_size])],
        [_value_info("output", _FLOAT, [batch, classes])],
        f"One-layer {op_type} over a [seq, batch, features] sequence, then a linear head on the "
        "last hidden state.",
        seed,
        dict(seq_len=seq_len, batch=batch, input_size=input_size, hidden=hidden, classes=classes),
    )


def _lstm(
    *,
    seed: int = 0,
    seq_len: int = 32,
    batch: int = 1,
    input_size: int = 64,
    hidden: int = 128,
    classes: int = 10,
) -> onnx.ModelProto:
    """ONNX LSTM op: input [seq_len, batch, input_size] -> last hidden state -> Gemm -> [batch, classes]."""
    return _recurrent(
        "LSTM", seed=seed, seq_len=seq_len, batch=batch, input_size=input_size, hidden=hidden, classes=classes
    )


def _gru(
    *,
    seed: int = 0,
    seq_len: int = 32,
    batch: int = 1,
    input_size: int = 64,
    hidden: int = 128,
    classes: int = 10,
) -> onnx.ModelProto:
    """ONNX GRU op (linear_before_reset=1): like ``lstm`` with a GRU cell."""
    return _recurrent(
        "GRU", seed=seed, seq_len=seq_len, batch=batch, input_size=input_size, hidden=hidden, classes=classes
    )


def _small_cnn(g: _Graph, x: str, widths: Iterable[tuple[int, int]], name_prefix: str = "conv") -> str:
    cin = 3
    for i, (cout, stride) in enumerate(widths):
        w = g.init(f"{name_prefix}{i}.weight", _conv_weight(g.rng, cout, cin, 3, rectified=True))
        b = g.normal(f"{name_prefix}{i}.bias", (cout,), 0.05)
        x = g.op(
            "Relu",
            [
                g.op(
                    "Conv",
                    [x, w, b],
                    f"{name_prefix}{i}",
                    kernel_shape=[3, 3],
                    pads=[1, 1, 1, 1],
                    strides=[stride, stride],
                )
            ],
            f"{name_prefix}{i}.relu",
        )
        cin = cout
    return x


def _dynamic(*, seed: int = 0, classes: int = 10) -> onnx.ModelProto:
    """A small CNN over input ("N", 3, "H", "W"): batch, height and width all dynamic.

    Three 3x3 convs (strides 2, 2, 1, padded), GlobalAveragePool, Flatten and
    Gemm, so any H, W >= 1 works; output ("N", classes).
    """
    g = _Graph(seed)
    x = _small_cnn(g, "input", [(16, 2), (32, 2), (64, 1)])
    y = _classifier(g, x, 64, classes, "fc", gain=4.0)
    g.rename(y, "output")
    return g.model(
        "dynamic",
        [_value_info("input", _FLOAT, ["N", 3, "H", "W"])],
        [_value_info("output", _FLOAT, ["N", classes])],
        "Small CNN with dynamic batch and spatial dims.",
        seed,
        {"classes": classes},
    )


def _dynamic_batch(*, seed: int = 0, classes: int = 10) -> onnx.ModelProto:
    """A small CNN over input ("batch", 3, 32, 32): only the batch is dynamic; output ("batch", classes)."""
    g = _Graph(seed)
    x = _small_cnn(g, "input", [(16, 1)])
    x = g.op("MaxPool", [x], "pool0", kernel_shape=[2, 2], strides=[2, 2])
    w = g.init("conv1.weight", _conv_weight(g.rng, 32, 16, 3, rectified=True))
    x = g.op(
        "Relu",
        [
            g.op(
                "Conv",
                [x, w, g.normal("conv1.bias", (32,), 0.05)],
                "conv1",
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
            )
        ],
        "conv1.relu",
    )
    x = g.op("MaxPool", [x], "pool1", kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Flatten", [x], "flatten", axis=1)  # [batch, 32 * 8 * 8]
    fc = g.normal("fc.weight", (classes, 32 * 8 * 8), math.sqrt(1.0 / (32 * 8 * 8)))
    y = g.op("Gemm", [x, fc, g.normal("fc.bias", (classes,), 0.01)], "fc", transB=1)
    g.rename(y, "output")
    return g.model(
        "dynamic_batch",
        [_value_info("input", _FLOAT, ["batch", 3, 32, 32])],
        [_value_info("output", _FLOAT, ["batch", classes])],
        "Small CNN with a dynamic batch dimension.",
        seed,
        {"classes": classes},
    )


# --------------------------------------------------------------------------- light_* models


def light_path(arch: str) -> Path:
    """Path of the ``light_<arch>.onnx`` file shipped in the onnx wheel.

    ``arch`` is one of :data:`LIGHT_ARCHS`, with or without the ``light_`` prefix.
    Raises ValueError for an unknown arch and FileNotFoundError when the
    installed onnx does not ship the file.
    """
    arch = arch.removeprefix("light_")
    if arch not in LIGHT_ARCHS:
        raise ValueError(f"Unknown light model {arch!r}. Known: {', '.join(LIGHT_ARCHS)}")
    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{arch}.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: this onnx {onnx.__version__} does not ship light_{arch}")
    return path


# Ops a weight passes through unchanged on its way to the op that uses it.
_PASS_THROUGH = {"Unsqueeze", "Squeeze", "Reshape", "Flatten", "Transpose", "Identity", "Cast"}


def materialize_light(model: onnx.ModelProto | str | Path, seed: int = 0) -> onnx.ModelProto:
    """Give a ``light_*`` model seeded random weights in place of its constant ones.

    The light models store every large weight as a ``ConstantOfShape`` node
    (all elements 0.02), which makes their outputs nearly independent of the
    input. Each ``ConstantOfShape`` whose shape is a constant and whose value
    is floating point becomes an initializer of the same shape and dtype, drawn
    from ``numpy.random.default_rng(seed)`` at a scale chosen from the op that
    consumes it: He-scaled Conv/Gemm/MatMul weights, small biases, BatchNorm
    scales and variances near 1 (variances always positive), and BatchNorm
    scales that feed a residual Sum damped so the sum does not grow layer after
    layer. Every other node and initializer is kept.

    The files are IR version 3, which lists every initializer as a graph input
    as well; the result is IR version 4 (same opset) with only the real inputs
    (the image) as graph inputs, so runtimes see the weights as constants.
    ``model`` may be a ModelProto (not modified) or a path.
    """
    if isinstance(model, onnx.ModelProto):
        src = model
    else:
        src = onnx.load(str(model))
    out = onnx.ModelProto()
    out.CopyFrom(src)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    producers: dict[str, onnx.NodeProto] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumers[name].append((node, i))
        for name in node.output:
            producers[name] = node

    rng = np.random.default_rng(seed)
    kept: list[onnx.NodeProto] = []
    weights: list[tuple[str, np.ndarray]] = []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input and node.input[0] in inits:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            dtype = (
                np.dtype(np.float32) if value is None else helper.tensor_dtype_to_np_dtype(value.data_type)
            )
            if np.issubdtype(dtype, np.floating):
                shape = tuple(int(d) for d in numpy_helper.to_array(inits[node.input[0]]))
                array = _light_weight(rng, node.output[0], shape, consumers, producers)
                weights.append((node.output[0], array.astype(dtype, copy=False)))
                continue
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)

    # Drop the shape tensors (and unused constants) the replaced nodes leave behind,
    # then add the new weights in place (they can be hundreds of MB: no extra copies).
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    live = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    for name, array in weights:
        t = graph.initializer.add()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        t.dims.extend(array.shape)
        t.raw_data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    init_names = {t.name for t in graph.initializer} | {t.name for t in src.graph.initializer}
    real_inputs = [vi for vi in graph.input if vi.name not in init_names]
    del graph.input[:]
    graph.input.extend(real_inputs)
    out.ir_version = max(out.ir_version, 4)
    helper.set_model_props(
        out, {**{p.key: p.value for p in out.metadata_props}, "autoinfer.zoo.materialized_seed": str(seed)}
    )
    return out


def _final_use(
    name: str, consumers: dict[str, list[tuple[onnx.NodeProto, int]]]
) -> tuple[onnx.NodeProto | None, int]:
    """The first op that uses tensor ``name`` as itself, looking through reshapes and casts."""
    seen = set()
    while name not in seen:
        seen.add(name)
        uses = consumers.get(name, [])
        if not uses:
            return None, -1
        node, idx = uses[0]
        if node.op_type in _PASS_THROUGH and idx == 0:
            name = node.output[0]
            continue
        return node, idx
    return None, -1


def _feeds_residual_sum(node: onnx.NodeProto, consumers: dict[str, list[tuple[onnx.NodeProto, int]]]) -> int:
    """How many terms the residual Sum/Add fed by ``node``'s output has (0 when there is none)."""
    for user, _ in consumers.get(node.output[0], []):
        if user.op_type in ("Sum", "Add") and len(user.input) >= 2:
            return len(user.input)
    return 0


def _light_weight(
    rng: np.random.Generator,
    name: str,
    shape: tuple[int, ...],
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]],
    producers: dict[str, onnx.NodeProto],
) -> np.ndarray:
    node, idx = _final_use(name, consumers)
    op = node.op_type if node is not None else ""
    ndim, size = len(shape), int(np.prod(shape, dtype=np.int64))

    def normal(std: float, mean: float = 0.0) -> np.ndarray:
        return _normal(rng, shape, std, mean)

    def uniform(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, shape).astype(np.float32)

    if op == "BatchNormalization":
        if idx == 1:  # scale: damp branches that are summed with others (ResNet, ShuffleNet units)
            terms = _feeds_residual_sum(node, consumers)
            return uniform(0.9, 1.1) * np.float32(1.0 if terms == 0 else 0.5)
        if idx == 4:  # running variance, positive
            return uniform(0.9, 1.1)
        return normal(0.05)  # bias, running mean
    if op in ("Mul", "Div"):  # scale layer (Caffe "Scale")
        return uniform(0.9, 1.1)
    if op in ("Add", "Sum", "Sub"):  # bias layer
        return normal(0.05)
    if op in ("Conv", "ConvTranspose", "Gemm", "MatMul") and idx >= 2:
        return normal(0.01)  # bias
    if ndim >= 2:
        rectified = _rectified_input(node, producers)
        if op == "Gemm" and not any(a.name == "transB" and a.i for a in node.attribute):
            axis: tuple[int, ...] = (0,)
        elif op == "MatMul":
            axis = (ndim - 2,)
        else:
            axis = tuple(range(1, ndim))
        fan_in = int(np.prod([shape[a] for a in axis]))
        gain = (2.9 if fan_in > 1 else 2.0) if rectified else 1.0
        w = normal(math.sqrt(gain / max(fan_in, 1)))
        if fan_in > 1:  # zero-sum over the inputs, as in _conv_weight
            w -= w.mean(axis=axis, keepdims=True)
        return w
    return normal(0.05) if size else np.zeros(shape, np.float32)


def _rectified_input(node: onnx.NodeProto | None, producers: dict[str, onnx.NodeProto]) -> bool:
    """Whether ``node``'s first input comes from a ReLU, through pooling, concat and reshapes only."""
    seen = 0
    while node is not None and node.input and seen < 16:
        node, seen = producers.get(node.input[0]), seen + 1
        if node is None:
            return False
        if node.op_type in ("Relu", "Clip", "LeakyRelu", "PRelu"):
            return True
        if node.op_type not in _SHAPE_ONLY:
            return False
    return False


# Ops between a ReLU and the next weight layer that keep the input rectified.
_SHAPE_ONLY = {
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Concat",
    "Reshape",
    "Flatten",
    "Dropout",
    "LRN",
    "Identity",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Split",
    "Slice",
}


def _light_builder(arch: str) -> Callable[..., onnx.ModelProto]:
    def build_light(*, seed: int = 0) -> onnx.ModelProto:
        model = materialize_light(light_path(arch), seed=seed)
        _stamp(model, f"light_{arch}", seed, {})
        return model

    build_light.__doc__ = (
        f"light_{arch} from the onnx wheel with seeded random weights (see materialize_light)."
    )
    return build_light


# --------------------------------------------------------------------------- public API

_BUILDERS: dict[str, Callable[..., onnx.ModelProto]] = {
    "tiny": _tiny,
    "mobilenetv2": _mobilenetv2,
    "resnet50": _resnet50,
    "efficientnet_b0": _efficientnet_b0,
    "bert_base": _bert,
    "transformer_small": _transformer_small,
    "lstm": _lstm,
    "gru": _gru,
    "dynamic": _dynamic,
    "dynamic_batch": _dynamic_batch,
    **{f"light_{arch}": _light_builder(arch) for arch in LIGHT_ARCHS},
}

#: Every name :func:`build` accepts.
NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build(name: str, *, seed: int = 0, **kwargs: Any) -> onnx.ModelProto:
    """Build zoo model ``name`` with weights drawn from ``numpy.random.default_rng(seed)``.

    ``kwargs`` go to the builder (for example ``layers=4`` for ``bert_base``,
    ``batch=8`` for the image models, ``fold_bn=False`` to keep BatchNormalization
    nodes). The same name, seed and kwargs always give the same model.
    Raises ValueError for an unknown name, listing the known ones.
    """
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(f"Unknown zoo model {name!r}. Known: {', '.join(NAMES)}") from None
    return builder(seed=seed, **kwargs)


def save(name: str, path: str | Path, *, seed: int = 0, **kwargs: Any) -> Path:
    """Build zoo model ``name`` and write it to ``path`` (parent folders are created)."""
    model = build(name, seed=seed, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def count_params(model: onnx.ModelProto) -> int:
    """Number of trainable parameters: elements of floating-point initializers.

    Left out, as in PyTorch's count: BatchNormalization running means and
    variances (buffers) and scalar constants (Clip bounds, 1/sqrt(d) and the like).
    """
    buffers = {
        n.input[i]
        for n in model.graph.node
        if n.op_type == "BatchNormalization"
        for i in (3, 4)
        if i < len(n.input)
    }
    total = 0
    for t in model.graph.initializer:
        if (
            t.name in buffers
            or not t.dims
            or not np.issubdtype(helper.tensor_dtype_to_np_dtype(t.data_type), np.floating)
        ):
            continue
        total += int(np.prod(t.dims, dtype=np.int64))
    return total


def sample_inputs(
    model: onnx.ModelProto, *, seed: int = 0, shapes: dict[str, Sequence[int]] | None = None
) -> dict[str, np.ndarray]:
    """Random feeds for every graph input of ``model`` that is not an initializer.

    Floats are standard normal. An integer input used as the indices of a
    Gather over a constant table (token ids) is uniform over that table's
    rows; an integer input whose name contains "mask" is all ones; other
    integers are 0 or 1. Booleans are random.

    Dynamic dimensions come from ``shapes`` (input name -> full shape; it
    must agree with the model's static dims) or else default to
    :data:`DEFAULT_BATCH` for the first dimension and :data:`DEFAULT_DIM` for
    the others. A dimension name used by several inputs gets one size, so
    ``shapes={"input_ids": (1, 256)}`` also sizes ``attention_mask``.

    Not ``autoinfer.measure.sample_feeds``, whose feeds the selection measures on: that one
    reads model facts from a file and needs every shape concrete, while the builders here hand
    over an in-memory ``ModelProto`` with symbolic dims to size; and its floats in [0, 1) and
    masks of 0s and 1s would change what the benchmarks and the cross-runtime tests feed
    (standard-normal activations, real attention masks of ones).
    """
    shapes = dict(shapes or {})
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    inputs = [vi for vi in graph.input if vi.name not in init_names]
    unknown = set(shapes) - {vi.name for vi in inputs}
    if unknown:
        raise ValueError(
            f"shapes names no input of the model: {sorted(unknown)}. "
            f"Expected some of {[vi.name for vi in inputs]}"
        )

    init_shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    index_rows: dict[str, int] = {}
    for node in graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in init_shapes:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            index_rows[node.input[1]] = init_shapes[node.input[0]][axis]

    symbols: dict[str, int] = {}
    for vi in inputs:  # bind dim names from the shapes given
        if vi.name not in shapes:
            continue
        dims = vi.type.tensor_type.shape.dim
        given = tuple(int(d) for d in shapes[vi.name])
        if len(given) != len(dims):
            raise ValueError(f"shapes[{vi.name!r}]: expected rank {len(dims)}, received {given}")
        for d, size in zip(dims, given, strict=True):
            if d.HasField("dim_value") and d.dim_value != size:
                raise ValueError(f"shapes[{vi.name!r}]: expected {_shape_str(dims)}, received {given}")
            if d.HasField("dim_param"):
                symbols.setdefault(d.dim_param, size)

    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for vi in inputs:
        tt = vi.type.tensor_type
        if vi.name in shapes:
            shape = tuple(int(d) for d in shapes[vi.name])
        else:
            shape = tuple(_resolve_dim(d, i, symbols) for i, d in enumerate(tt.shape.dim))
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        elif dtype == np.bool_:
            feeds[vi.name] = rng.random(shape) < 0.5
        elif vi.name in index_rows:
            feeds[vi.name] = rng.integers(0, index_rows[vi.name], shape).astype(dtype)
        elif "mask" in vi.name.lower():
            feeds[vi.name] = np.ones(shape, dtype)
        else:
            feeds[vi.name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


def _resolve_dim(d: onnx.TensorShapeProto.Dimension, index: int, symbols: dict[str, int]) -> int:
    if d.HasField("dim_value") and d.dim_value > 0:
        return int(d.dim_value)
    default = DEFAULT_BATCH if index == 0 else DEFAULT_DIM
    if d.HasField("dim_param"):
        return symbols.setdefault(d.dim_param, default)
    return default


def _shape_str(dims: Iterable[onnx.TensorShapeProto.Dimension]) -> str:
    return (
        "("
        + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)
        + ")"
    )


# --------------------------------------------------------------------------- CLI


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tests/zoo.py", description="Write a zoo model (seeded random weights) to an ONNX file."
    )
    parser.add_argument("name", nargs="?", help="model name (see --list)")
    parser.add_argument("out", nargs="?", help="output .onnx path")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="builder argument, for example --set layers=4 (repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="list the model names and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(NAMES))
        return 0
    if not args.name or not args.out:
        parser.error("NAME and OUT are required (or --list)")
    kwargs = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set expects KEY=VALUE, received {item!r}")
        kwargs[key.strip()] = _parse_value(value.strip())
    try:
        model = build(args.name, seed=args.seed, **kwargs)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    print(f"wrote {path} ({args.name}, seed {args.seed}, {count_params(model) / 1e6:.2f}M parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
