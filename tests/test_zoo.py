"""The model zoo: published sizes, valid graphs, and outputs worth comparing across runtimes."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import zoo

ort = pytest.importorskip("onnxruntime")

LONG = bool(os.environ.get("AUTOINFER_LONG"))
long_only = pytest.mark.skipif(not LONG, reason="large model; runs with AUTOINFER_LONG=1 (make test-long)")

# Built once per session: several tests look at the same model.
build = functools.lru_cache(maxsize=None)(zoo.build)


def session(model: onnx.ModelProto):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def assert_meaningful(out: np.ndarray) -> None:
    assert np.isfinite(out).all()
    assert np.ptp(out) > 0, "output is constant"
    assert np.abs(out).max() < 1e4, "activations blew up"


def test_names_cover_the_zoo():
    expected = {
        "tiny",
        "mobilenetv2",
        "resnet50",
        "efficientnet_b0",
        "bert_base",
        "transformer_small",
        "lstm",
        "gru",
        "dynamic",
        "dynamic_batch",
    } | {f"light_{a}" for a in zoo.LIGHT_ARCHS}
    assert set(zoo.NAMES) == expected
    assert len(zoo.NAMES) == len(set(zoo.NAMES))


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="Known: .*mobilenetv2"):
        zoo.build("mobilenet_v9")


# Published parameter counts (torchvision).
@pytest.mark.parametrize(
    "name, published", [("mobilenetv2", 3.5e6), ("resnet50", 25.6e6), ("efficientnet_b0", 5.3e6)]
)
def test_parameter_count_matches_the_published_one(name, published):
    assert zoo.count_params(build(name)) == pytest.approx(published, rel=0.03)


@pytest.mark.parametrize(
    "name, exact",
    [
        ("mobilenetv2", 3_504_872),
        ("resnet50", 25_557_032),
        ("efficientnet_b0", 5_288_548),
    ],
)
def test_unfolded_batchnorm_gives_torchvision_exact_count(name, exact):
    model = build(name, fold_bn=False)
    assert zoo.count_params(model) == exact
    assert any(n.op_type == "BatchNormalization" for n in model.graph.node)


def test_bert_base_size_and_structure():
    model = zoo.build("bert_base")  # 440 MB: built once, not cached
    # The published 110M includes the 0.6M pooler, which the encoder leaves out.
    assert zoo.count_params(model) == pytest.approx(110e6, rel=0.03)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("LayerNormalization") == 1 + 2 * 12
    assert ops.count("Softmax") == 12 and ops.count("Erf") == 12
    dims = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input}
    assert dims == {"input_ids": [1, 128], "attention_mask": [1, 128]}
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 128, 768]


RUN_CHECKED = [
    "tiny",
    "mobilenetv2",
    "resnet50",
    "efficientnet_b0",
    "transformer_small",
    "lstm",
    "gru",
    "dynamic",
    "dynamic_batch",
]


@pytest.mark.parametrize("name", RUN_CHECKED)
def test_model_is_valid_and_runs_with_meaningful_outputs(name):
    model = build(name)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == zoo.OPSET
    sess = session(model)
    out_a = sess.run(None, zoo.sample_inputs(model, seed=0))[0]
    out_b = sess.run(None, zoo.sample_inputs(model, seed=1))[0]
    assert_meaningful(out_a)
    expected = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert [e or o for e, o in zip(expected, out_a.shape, strict=True)] == list(out_a.shape)
    # The output depends on the input, not only on biases: other inputs move it by a good part of its spread.
    assert np.abs(out_a - out_b).mean() > 0.05 * np.abs(out_a - out_a.mean()).mean()


def test_image_models_take_224_images_and_give_1000_classes():
    for name in ("mobilenetv2", "resnet50", "efficientnet_b0"):
        model = build(name)
        assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 224, 224]
        assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 1000]
    ops = {n.op_type for n in build("mobilenetv2").graph.node}
    assert "Clip" in ops
    depthwise = [
        n
        for n in build("mobilenetv2").graph.node
        if n.op_type == "Conv" and next(a.i for a in n.attribute if a.name == "group") > 1
    ]
    assert len(depthwise) == 17
    assert {"Sigmoid", "GlobalAveragePool", "Mul"} <= {n.op_type for n in build("efficientnet_b0").graph.node}


def test_recurrent_models_use_the_onnx_ops():
    assert "LSTM" in {n.op_type for n in build("lstm").graph.node}
    assert "GRU" in {n.op_type for n in build("gru").graph.node}


def test_folding_batchnorm_keeps_the_function():
    folded, unfolded = build("mobilenetv2"), build("mobilenetv2", fold_bn=False)
    feeds = zoo.sample_inputs(folded)
    np.testing.assert_allclose(
        session(folded).run(None, feeds)[0], session(unfolded).run(None, feeds)[0], rtol=1e-4, atol=1e-4
    )


def test_same_seed_same_model_other_seed_other_weights():
    assert (
        zoo.build("transformer_small", seed=3).SerializeToString()
        == zoo.build("transformer_small", seed=3).SerializeToString()
    )
    a, b = zoo.build("tiny", seed=0), zoo.build("tiny", seed=1)
    assert not np.array_equal(
        onnx.numpy_helper.to_array(a.graph.initializer[0]), onnx.numpy_helper.to_array(b.graph.initializer[0])
    )


def test_builder_kwargs_reach_the_builder():
    model = zoo.build("transformer_small", layers=1, seq_len=16, hidden=64, heads=2, batch=2)
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [2, 16, 64]
    out = session(model).run(None, zoo.sample_inputs(model))[0]
    assert out.shape == (2, 16, 64)
    with pytest.raises(ValueError, match="multiple of heads"):
        zoo.build("transformer_small", hidden=100, heads=3)


def test_dynamic_model_runs_at_several_batches_and_sizes():
    model = build("dynamic")
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "", "H", "W"]
    sess = session(model)
    small = zoo.sample_inputs(model)  # documented defaults
    assert small["input"].shape == (zoo.DEFAULT_BATCH, 3, zoo.DEFAULT_DIM, zoo.DEFAULT_DIM)
    big = zoo.sample_inputs(model, seed=1, shapes={"input": (3, 3, 97, 45)})
    assert sess.run(None, small)[0].shape == (1, 10)
    out = sess.run(None, big)[0]
    assert out.shape == (3, 10)
    assert_meaningful(out)
    # Each item of a batch is computed on its own.
    np.testing.assert_allclose(
        sess.run(None, {"input": big["input"][1:2]})[0], out[1:2], rtol=1e-4, atol=1e-5
    )
    assert sess.run(None, {"input": np.zeros((1, 3, 8, 8), np.float32)})[0].shape == (1, 10)


def test_dynamic_batch_model_runs_at_two_batches():
    model = build("dynamic_batch")
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 32, 32]
    sess = session(model)
    four = zoo.sample_inputs(model, shapes={"input": (4, 3, 32, 32)})["input"]
    out = sess.run(None, {"input": four})[0]
    assert out.shape == (4, 10)
    np.testing.assert_allclose(sess.run(None, {"input": four[2:3]})[0], out[2:3], rtol=1e-4, atol=1e-5)


def test_sample_inputs_token_ids_stay_within_the_vocabulary():
    model = build("transformer_small")  # vocab 1000
    feeds = zoo.sample_inputs(model, seed=5)
    assert feeds["input_ids"].dtype == np.int64 and feeds["input_ids"].shape == (1, 32)
    assert 0 <= feeds["input_ids"].min() and feeds["input_ids"].max() < 1000
    assert len(np.unique(feeds["input_ids"])) > 10
    assert (feeds["attention_mask"] == 1).all()


def test_sample_inputs_reject_shapes_that_do_not_fit():
    model = build("dynamic_batch")
    with pytest.raises(ValueError, match=r"expected \(batch, 3, 32, 32\), received \(2, 3, 30, 32\)"):
        zoo.sample_inputs(model, shapes={"input": (2, 3, 30, 32)})
    with pytest.raises(ValueError, match="rank"):
        zoo.sample_inputs(model, shapes={"input": (2, 3, 32)})
    with pytest.raises(ValueError, match="no input"):
        zoo.sample_inputs(model, shapes={"image": (2, 3, 32, 32)})


def test_sample_inputs_give_one_size_per_dimension_name():
    x = onnx.helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["batch", "seq"])
    m = onnx.helper.make_tensor_value_info("mask", onnx.TensorProto.INT64, ["batch", "seq"])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT64, ["batch", "seq"])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Add", ["ids", "mask"], ["y"])], "g", [x, m], [y])
    model = onnx.helper.make_model(graph)
    feeds = zoo.sample_inputs(model, shapes={"ids": (2, 7)})
    assert feeds["ids"].shape == feeds["mask"].shape == (2, 7)
    assert zoo.sample_inputs(model)["mask"].shape == (zoo.DEFAULT_BATCH, zoo.DEFAULT_DIM)


# ---------------------------------------------------------------- light_* models from the onnx wheel

LIGHT_FAST = ["squeezenet", "shufflenet", "resnet50", "densenet121", "inception_v1", "inception_v2"]
LIGHT_SLOW = ["bvlc_alexnet", "zfnet512", "vgg19"]  # 60M-140M parameters, mostly fully connected


def test_light_path_finds_every_shipped_model():
    for arch in zoo.LIGHT_ARCHS:
        assert zoo.light_path(arch).is_file()
    assert zoo.light_path("light_resnet50") == zoo.light_path("resnet50")
    with pytest.raises(ValueError, match="Known: .*squeezenet"):
        zoo.light_path("resnet18")


def test_materialize_keeps_the_graph_and_replaces_only_the_constant_weights():
    original = onnx.load(str(zoo.light_path("resnet50")))
    before = original.SerializeToString()
    model = zoo.materialize_light(original, seed=0)
    assert original.SerializeToString() == before, "the given model was modified"
    assert not any(n.op_type == "ConstantOfShape" for n in model.graph.node)
    kept = [n for n in original.graph.node if n.op_type != "ConstantOfShape"]
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in kept]
    assert [vi.name for vi in model.graph.input] == ["gpu_0/data_0"]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            assert (inits[node.input[4]] > 0).all()
    # Initializers the file already had with real values are kept as they are.
    shipped = {t.name: onnx.numpy_helper.to_array(t) for t in original.graph.initializer}
    np.testing.assert_array_equal(inits["gpu_0/res_conv1_bn_s_0"], shipped["gpu_0/res_conv1_bn_s_0"])
    assert (
        zoo.materialize_light(zoo.light_path("resnet50"), seed=0).SerializeToString()
        == model.SerializeToString()
    )


def _check_light(arch: str) -> None:
    model = build(f"light_{arch}")
    onnx.checker.check_model(model, full_check=True)
    original = onnx.load(str(zoo.light_path(arch)))
    name = model.graph.input[0].name
    feeds_a, feeds_b = zoo.sample_inputs(model, seed=0), zoo.sample_inputs(model, seed=1)
    sess = session(model)
    out_a, out_b = sess.run(None, feeds_a)[0], sess.run(None, feeds_b)[0]
    assert_meaningful(out_a)
    assert np.abs(out_a - out_b).mean() > 0.02 * np.abs(out_a - out_a.mean()).mean(), (
        "output ignores the input"
    )
    out_original = session(original).run(None, {name: feeds_a[name]})[0]
    assert out_original.shape == out_a.shape
    assert not np.allclose(out_a, out_original, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("arch", LIGHT_FAST)
def test_materialized_light_model_depends_on_its_input(arch):
    _check_light(arch)


@long_only
@pytest.mark.parametrize("arch", LIGHT_SLOW)
def test_materialized_large_light_model_depends_on_its_input(arch):
    _check_light(arch)


# ---------------------------------------------------------------- save and CLI


def test_save_creates_parent_folders(tmp_path):
    path = zoo.save("tiny", tmp_path / "a" / "b" / "tiny.onnx", seed=2)
    assert path.is_file()
    assert onnx.load(str(path)).SerializeToString() == zoo.build("tiny", seed=2).SerializeToString()


def test_cli_writes_a_loadable_model(tmp_path):
    out = tmp_path / "models" / "lstm.onnx"
    result = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("zoo.py")),
            "lstm",
            str(out),
            "--seed",
            "4",
            "--set",
            "hidden=32",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["autoinfer.zoo.seed"] == "4" and meta["autoinfer.zoo.hidden"] == "32"
    assert str(out) in result.stdout


def test_cli_lists_names_and_rejects_unknown_ones(capsys):
    assert zoo.main(["--list"]) == 0
    assert capsys.readouterr().out.split() == list(zoo.NAMES)
    assert zoo.main(["nonexistent", "x.onnx"]) == 2
    assert "Known:" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet50", "efficientnet_b0", "lstm", "dynamic"])
def test_the_flop_estimate_without_the_weights_is_the_estimate_with_them(name, tmp_path):
    """Reading a model infers its shapes on its skeleton (the large weights' data left
    unread, in a child process); the estimate must be the whole model's."""
    from autoinfer import shape_check, skeleton
    from autoinfer.model import load_facts

    whole = build(name)
    path = tmp_path / f"{name}.onnx"
    onnx.save(whole, str(path))
    light = skeleton.read_skeleton(path)
    assert light is not None
    assert len(light) < whole.ByteSize() or whole.ByteSize() < 1 << 17
    expected = shape_check.flops_of(shape_check.infer_here(whole))
    assert load_facts(path).flops == expected > 0
