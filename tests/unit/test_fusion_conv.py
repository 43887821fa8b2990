"""The Conv / Gemm / MatMul fusion family: conv_bn, linear, conv_add_relu, activation.

For each rule: a graph made for it, how many rewrites fire, outputs before and after equal
on `reference` and `x86` (fp32 tolerance) with the fused x86 kernels running natively,
and candidates the rule must refuse, with their recorded reasons. Then provenance,
export, and the zoo's ResNet and MobileNetV2.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench import zoo
from workbench.engine.passes import optimize
from workbench.engine.passes.fusion import activation, conv_add_relu, conv_bn, linear
from workbench.testing import assert_close, assert_same_outputs, op_names, rejection_reasons

FAMILY = [*conv_bn.PASSES, *linear.PASSES, *conv_add_relu.PASSES, *activation.PASSES]
BACKENDS = ("reference", "x86")
F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _rand(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _model(nodes, inputs, outputs, inits=(), opset: int = 20) -> wb.Model:
    """A model from helper nodes; `inputs`/`outputs` are (name, shape), `inits` arrays."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F, s) for n, s in outputs],
        initializer=[numpy_helper.from_array(a, n) for n, a in inits],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return wb.load(proto)


def _feeds(model: wb.Model) -> dict[str, np.ndarray]:
    return wb.Session(model, "reference").random_feeds()


def _fused(model: wb.Model, backend: str = "x86", passes=FAMILY):
    return optimize(model, backend=backend, passes=passes, strict=True)


def _check_outputs(result, feeds=None) -> None:
    """Before and after agree on both backends; x86 runs every fused node natively; the
    optimized model exports as one the ONNX checker accepts."""
    onnx.checker.check_model(wb.to_onnx(result.after))
    feeds = feeds or _feeds(result.before)
    for backend in BACKENDS:
        after = assert_same_outputs(result.before, result.after, feeds, backend, rtol=1e-4)
        fused = [s.node.name for s in after.plan.steps if s.node.domain == "workbench"]
        fallbacks = [s.node.name for s in after.plan.fallbacks if s.node.domain == "workbench"]
        assert not fallbacks, f"fused nodes fell back to reference on {backend}: {fallbacks}"
        if backend == "x86":
            algorithms = [s.kernel.algorithm for s in after.plan.steps if s.node.name in fused]
            assert all(a.endswith("+epilogue") for a in algorithms), algorithms


_ops, _reasons = op_names, rejection_reasons


# -- conv_bn ---------------------------------------------------------------------------------
def _conv_bn(
    *, bias: bool = True, scale_input: bool = False, second_use: bool = False, training=False
) -> wb.Model:
    w = _rand(4, 3, 3, 3, scale=0.3)
    gamma = _rand(4, scale=0.2) + 1
    inits = [("w", w), ("beta", _rand(4)), ("mean", _rand(4)), ("var", _rand(4) ** 2 + 0.5)]
    inits += [("b", _rand(4))] if bias else []
    inputs = [("x", [1, 3, 6, 6])]
    if scale_input:
        inputs.append(("gamma", [4]))
    else:
        inits.append(("gamma", gamma))
    bn_attrs = {"epsilon": 1e-3, **({"training_mode": 1} if training else {})}
    bn_in = ["c", "gamma", "beta", "mean", "var"]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b" if bias else ""], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("BatchNormalization", bn_in, ["y"], name="bn", **bn_attrs),
    ]
    outputs = [("y", [1, 4, 6, 6])]
    if second_use:
        nodes.append(helper.make_node("Relu", ["c"], ["r"], name="relu"))
        outputs.append(("r", [1, 4, 6, 6]))
    return _model(nodes, inputs, outputs, inits)


@pytest.mark.parametrize("bias", [True, False])
def test_conv_bn_folds_the_batchnorm_into_new_constants(bias):
    result = _fused(_conv_bn(bias=bias))
    assert result.counts_by_rule() == Counter({"conv_bn": 1})
    assert _ops(result.after) == ["Conv"]
    conv = result.after.graph.nodes[0]
    w, b = conv.inputs[1], conv.inputs[2]
    assert w.const is not None and b.const is not None
    assert w.meta["origin"] == b.meta["origin"] == ("conv", "bn")
    # the unfolded weights and BN parameters are no longer carried
    assert not {"w", "gamma", "beta", "mean", "var"} & set(result.after.graph.initializers)
    assert {"w", "gamma"} <= set(result.before.graph.initializers)
    _check_outputs(result)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (_conv_bn(scale_input=True), "BatchNormalization scale is not constant"),
        (_conv_bn(second_use=True), "Conv output 'c' has a second consumer (Relu 'relu')"),
        (_conv_bn(training=True), "BatchNormalization in training mode"),
    ],
    ids=["scale-not-constant", "second-consumer", "training"],
)
def test_conv_bn_refuses_with_reason(model, reason):
    result = _fused(model, passes=conv_bn.PASSES)
    assert not result.changes
    assert _reasons(result, "conv_bn") == [reason]


# -- linear (MatMul + Add) -------------------------------------------------------------------
def _matmul_add(bias: np.ndarray | None, *, swap: bool = False, act: str | None = None):
    w = _rand(8, 5, scale=0.4)
    inits = [("w", w)]
    inputs = [("x", [2, 3, 8])]
    if bias is None:
        inputs.append(("bias", [2, 3, 5]))
    else:
        inits.append(("bias", bias))
    add_in = ["bias", "m"] if swap else ["m", "bias"]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
        helper.make_node("Add", add_in, ["a" if act else "y"], name="add"),
    ]
    if act:
        nodes.append(helper.make_node(act, ["a"], ["y"], name="act"))
    return _model(nodes, inputs, [("y", [2, 3, 5])], inits)


@pytest.mark.parametrize("bias_shape", [(5,), (1, 1, 5), (1,)])
@pytest.mark.parametrize("swap", [False, True])
def test_linear_fuses_matmul_and_bias(bias_shape, swap):
    result = _fused(_matmul_add(_rand(*bias_shape), swap=swap))
    assert result.counts_by_rule() == Counter({"matmul_add": 1})
    assert _ops(result.after) == ["workbench.FusedMatMul"]
    _check_outputs(result)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (_matmul_add(None), "Add operand 'bias' is not constant"),
        (_matmul_add(_rand(3, 5)), "bias of shape [3, 5] does not broadcast along the last dim"),
    ],
    ids=["bias-not-constant", "bias-not-along-last-dim"],
)
def test_linear_refuses_with_reason(model, reason):
    result = _fused(model, passes=linear.PASSES)
    assert not result.changes
    (got,) = _reasons(result, "matmul_add")
    assert got.startswith(reason)


def test_fused_ops_are_only_emitted_for_backends_with_a_kernel(bare_backend):
    result = _fused(_matmul_add(_rand(5)), backend="bare", passes=linear.PASSES)
    assert not result.changes
    assert _reasons(result, "matmul_add") == ["bare has no kernel for workbench.FusedMatMul"]
    result = _fused(_conv(ACTIVATIONS["Relu"][0]), backend="bare")
    assert _reasons(result, "activation") == ["bare has no kernel for workbench.FusedConv"]


# -- conv_add_relu ---------------------------------------------------------------------------
def _conv_add(
    *, relu: bool = True, z_shape=(1, 4, 6, 6), two_convs: bool = False, bias: bool = True
):
    inits = [("w", _rand(4, 3, 3, 3, scale=0.3)), ("b", _rand(4))][: 2 if bias else 1]
    inputs = [("x", [1, 3, 6, 6])]
    conv_in = ["x", "w", "b"] if bias else ["x", "w"]
    nodes = [helper.make_node("Conv", conv_in, ["c"], name="conv", pads=[1] * 4)]
    if two_convs:  # a ResNet downsample branch: the residual is a 1x1 Conv of the same input
        inits.append(("w2", _rand(4, 3, 1, 1)))
        nodes.append(helper.make_node("Conv", ["x", "w2"], ["z"], name="down"))
    else:
        inputs.append(("z", list(z_shape)))
    out_shape = list(np.broadcast_shapes((1, 4, 6, 6), tuple(z_shape)))
    nodes.append(helper.make_node("Add", ["c", "z"], ["a" if relu else "y"], name="add"))
    if relu:
        nodes.append(helper.make_node("Relu", ["a"], ["y"], name="relu"))
    return _model(nodes, inputs, [("y", out_shape)], inits)


@pytest.mark.parametrize(
    ("model", "activation_attr"),
    [
        (_conv_add(), "Relu"),
        (_conv_add(relu=False), None),
        (_conv_add(two_convs=True), "Relu"),
        (_conv_add(bias=False), "Relu"),
    ],
    ids=["conv-add-relu", "conv-add", "two-convs", "no-bias"],
)
def test_conv_add_relu_takes_the_residual_as_z(model, activation_attr):
    result = _fused(model)
    assert result.counts_by_rule() == Counter({"conv_add_relu": 1})
    fused = next(n for n in result.after.graph if n.op_type == "FusedConv")
    assert fused.attrs.get("activation") == activation_attr
    assert fused.inputs[3] is not None and fused.inputs[3].name == "z"
    _check_outputs(result)


def test_conv_add_relu_refuses_a_residual_that_broadcasts_the_conv_output():
    result = _fused(_conv_add(z_shape=(2, 4, 6, 6)), passes=conv_add_relu.PASSES)
    assert not result.changes
    assert _reasons(result, "conv_add_relu") == [
        "the Add broadcasts the Conv output [1, 4, 6, 6] to [2, 4, 6, 6]"
    ]


# -- activation ------------------------------------------------------------------------------
# activation nodes reading "p" and writing "y", and the constants they need
ACTIVATIONS = {
    "Relu": ([helper.make_node("Relu", ["p"], ["y"], name="act")], []),
    "LeakyRelu": ([helper.make_node("LeakyRelu", ["p"], ["y"], name="act", alpha=0.2)], []),
    "Relu6": (
        [
            helper.make_node("Constant", [], ["lo"], value=numpy_helper.from_array(np.float32(0))),
            helper.make_node("Constant", [], ["hi"], value=numpy_helper.from_array(np.float32(6))),
            helper.make_node("Clip", ["p", "lo", "hi"], ["y"], name="act"),
        ],
        [],
    ),
    "ClipMinOnly": ([helper.make_node("Clip", ["p", "lo"], ["y"], name="act")], [("lo", -0.5)]),
    "Sigmoid": ([helper.make_node("Sigmoid", ["p"], ["y"], name="act")], []),
    "HardSigmoid": (
        [helper.make_node("HardSigmoid", ["p"], ["y"], name="act", alpha=0.3, beta=0.4)],
        [],
    ),
    "HardSwish": ([helper.make_node("HardSwish", ["p"], ["y"], name="act")], []),
    "SiLU": (
        [
            helper.make_node("Sigmoid", ["p"], ["s"], name="sig"),
            helper.make_node("Mul", ["s", "p"], ["y"], name="act"),
        ],
        [],
    ),
    "Gelu": ([helper.make_node("Gelu", ["p"], ["y"], name="act")], []),
    "GeluTanh": ([helper.make_node("Gelu", ["p"], ["y"], name="act", approximate="tanh")], []),
}
EXPECTED = {"Relu6": ("Clip", [0.0, 6.0]), "ClipMinOnly": ("Clip", [-0.5, np.inf])}


def _conv(act_nodes, extra=(), *, group: int = 1, one_d: bool = False, inputs=()) -> wb.Model:
    cg = 4 // group
    if one_d:
        shape_x, shape_w, out, pads = [1, 4, 9], [8, cg, 3], [1, 8, 10], [1, 2]
    else:
        shape_x, shape_w, out, pads = [1, 4, 6, 6], [8, cg, 3, 3], [1, 8, 6, 6], [1] * 4
    inits = [("w", _rand(*shape_w, scale=0.5)), ("b", _rand(8)), *_consts(extra)]
    conv = helper.make_node("Conv", ["x", "w", "b"], ["p"], name="conv", pads=pads, group=group)
    return _model([conv, *act_nodes], [("x", shape_x), *inputs], [("y", out)], inits)


def _consts(extra) -> list[tuple[str, np.ndarray]]:
    return [(n, np.asarray(v, np.float32)) for n, v in extra]


def _gemm(act_nodes, extra=(), *, full_c: bool = False) -> wb.Model:
    c = _rand(3, 5) if full_c else _rand(5)
    inits = [("w", _rand(5, 8, scale=0.4)), ("c", c), *_consts(extra)]
    gemm = helper.make_node("Gemm", ["x", "w", "c"], ["p"], name="gemm", transB=1, alpha=0.7)
    return _model([gemm, *act_nodes], [("x", [3, 8])], [("y", [3, 5])], inits)


def _linear(act_nodes, extra=()) -> wb.Model:
    inits = [("w", _rand(8, 5, scale=0.4)), ("bias", _rand(5)), *_consts(extra)]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "bias"], ["p"], name="add"),
        *act_nodes,
    ]
    return _model(nodes, [("x", [2, 3, 8])], [("y", [2, 3, 5])], inits)


def _matmul(act_nodes, extra=()) -> wb.Model:
    """A MatMul without bias: it becomes a FusedMatMul without one."""
    inits = [("w", _rand(8, 5, scale=0.4)), *_consts(extra)]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["p"], name="matmul"), *act_nodes]
    return _model(nodes, [("x", [2, 3, 8])], [("y", [2, 3, 5])], inits)


def _expected(case: str) -> tuple[str, list[float] | None]:
    if case in EXPECTED:
        return EXPECTED[case]
    params = {"LeakyRelu": [0.2], "HardSigmoid": [0.3, 0.4]}.get(case)
    return case, params


@pytest.mark.parametrize("case", sorted(ACTIVATIONS))
@pytest.mark.parametrize(
    "make", [_conv, _linear, _gemm, _matmul], ids=["conv", "matmul_add", "gemm", "matmul"]
)
def test_every_activation_fuses_into_every_producer(make, case):
    nodes, extra = ACTIVATIONS[case]
    result = _fused(make(nodes, extra))
    assert result.counts_by_rule()["activation"] == 1
    (fused,) = list(result.after.graph)
    name, params = _expected(case)
    assert fused.domain == "workbench"
    assert fused.attrs["activation"] == name
    assert fused.attrs.get("activation_params") == (params and pytest.approx(params))
    _check_outputs(result)


@pytest.mark.parametrize(
    "model",
    [
        _conv(ACTIVATIONS["HardSwish"][0], group=2),
        _conv(ACTIVATIONS["Relu6"][0], group=4),  # depthwise-like: one input channel per group
        _conv(ACTIVATIONS["SiLU"][0], one_d=True),
        _gemm(ACTIVATIONS["LeakyRelu"][0], full_c=True),
    ],
    ids=["grouped", "depthwise", "conv1d", "gemm-full-c"],
)
def test_activation_on_other_kernel_paths(model):
    result = _fused(model)
    assert result.counts_by_rule()["activation"] == 1
    _check_outputs(result)


EPILOGUE_VALUES = np.concatenate(
    [
        np.linspace(-30, 30, 1201),
        [-120, -89, -88, 88, 89, 120, -3, -2.999, -3.001, -5.7, 1e-8],
        [np.inf, -np.inf, np.nan, 0.0, -0.0],
    ]
).astype(np.float32)


@pytest.mark.parametrize("case", sorted(ACTIVATIONS))
def test_x86_epilogue_agrees_with_reference_over_a_wide_range(case):
    """x86's epilogue (its own exp, the erf polynomial with an erfc tail) on chosen values:
    tails, overflow of exp, infinities and NaN, through FusedMatMul by a 1x1 identity."""
    name, params = _expected(case)
    attrs = {"activation": name, **({"activation_params": params} if params else {})}
    node = helper.make_node("FusedMatMul", ["a", "one", "zero"], ["y"], domain="workbench", **attrs)
    n = EPILOGUE_VALUES.size
    graph = helper.make_graph(
        [node],
        "epilogue",
        [helper.make_tensor_value_info("a", F, [n, 1])],
        [helper.make_tensor_value_info("y", F, [n, 1])],
        initializer=[
            numpy_helper.from_array(np.ones((1, 1), np.float32), "one"),
            numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
        ],
    )
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid("workbench", 1)]
    model = wb.load(helper.make_model(graph, opset_imports=opsets, ir_version=8))
    feeds = {"a": EPILOGUE_VALUES[:, None]}
    want = wb.Session(model, "reference").run(feeds)["y"]
    got = wb.Session(model, "x86").run(feeds)["y"]
    assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert np.array_equal(np.isnan(got), np.isnan(want))


def test_activation_joins_a_fused_conv_with_residual():
    relu_free = _conv_add(relu=False)
    proto = wb.to_onnx(relu_free)
    proto.graph.node[-1].output[0] = "a"
    proto.graph.node.append(helper.make_node("LeakyRelu", ["a"], ["y"], name="leaky", alpha=0.1))
    result = _fused(wb.load(proto))
    assert result.counts_by_rule() == Counter({"conv_add_relu": 1, "activation": 1})
    (fused,) = list(result.after.graph)
    assert fused.attrs["activation"] == "LeakyRelu" and fused.inputs[3].name == "z"
    assert result.origin(fused.name) == ("conv", "add", "leaky")
    _check_outputs(result)


def test_workbench_gelu_from_the_gelu_rule_is_fused_too():
    """A `workbench.Gelu` (what the gelu rule writes below opset 20) fuses like Gelu."""
    standard = _conv(ACTIVATIONS["GeluTanh"][0])
    proto = wb.to_onnx(standard)
    gelu = proto.graph.node[-1]
    gelu.domain = "workbench"
    proto.opset_import.append(helper.make_opsetid("workbench", 1))
    result = _fused(wb.load(proto, check=False), passes=activation.PASSES)
    assert result.counts_by_rule() == Counter({"activation_gelu": 1})
    (fused,) = list(result.after.graph)
    assert fused.attrs["activation"] == "GeluTanh"
    # the same computation as the standard Gelu graph, unfused
    feeds = _feeds(standard)
    for backend in BACKENDS:
        want = wb.Session(standard, backend).run(feeds)["y"]
        assert_close(wb.Session(result.after, backend).run(feeds)["y"], want, rtol=1e-4)


def test_activation_refuses_with_reason():
    clip = [helper.make_node("Clip", ["p", "lo"], ["y"], name="act")]
    result = _fused(_conv(clip, inputs=[("lo", [])]), passes=activation.PASSES)
    assert not result.changes
    assert _reasons(result, "activation") == ["Clip min/max are not constant"]
    # a float64 Conv would run on reference: x86 computes float32 only
    proto = wb.to_onnx(_conv(ACTIVATIONS["Relu"][0]))
    for t in proto.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for v in (*proto.graph.input, *proto.graph.output):
        v.type.tensor_type.elem_type = TensorProto.DOUBLE
    del proto.graph.value_info[:]  # (inferred again, as double)
    result = _fused(wb.load(proto), passes=activation.PASSES)
    assert _reasons(result, "activation") == ["x86 computes float32, not float64"]
    result = _fused(wb.load(proto), backend="reference", passes=activation.PASSES)
    assert result.counts_by_rule()["activation"] == 1


def test_a_silu_sigmoid_is_not_fused_alone():
    result = _fused(_conv(ACTIVATIONS["SiLU"][0]), passes=activation.PASSES)
    assert not result.rejected  # the Sigmoid is left to the Mul that completes the SiLU
    assert _ops(result.after) == ["workbench.FusedConv"]


def test_unknown_activation_is_a_clear_error():
    model = _conv(ACTIVATIONS["Relu"][0])
    result = _fused(model)
    (fused,) = list(result.after.graph)
    fused.attrs["activation"] = "Swish"
    for backend in BACKENDS:  # x86 declines it, reference says why
        with pytest.raises(wb.WorkbenchError, match=r"unknown activation 'Swish'.*known: Relu"):
            wb.Session(result.after, backend)


@pytest.mark.parametrize(
    "model",
    [_conv_add(), _linear(ACTIVATIONS["Relu"][0]), _gemm(ACTIVATIONS["HardSwish"][0])],
    ids=["FusedConv", "FusedMatMul", "FusedGemm"],
)
def test_x86_fused_kernels_write_into_a_given_buffer(model):
    """The memory planner's destination passing: the epilogue runs in the given buffer."""
    from workbench.engine.backends import get_backend
    from workbench.engine.backends.base import CompileContext

    result = _fused(model)
    (node,) = [n for n in result.after.graph if n.domain == "workbench"]
    x86 = get_backend("x86")
    run = x86.compile(node, CompileContext(x86, 1, "fp32", dict(result.after.opset_imports))).run
    if not getattr(run, "writes_out", False):
        pytest.skip("the plain x86 kernels do not write into given buffers here")
    feeds = _feeds(result.before)
    args = [None if v is None else v.const if v.const is not None else feeds[v.name]
            for v in node.inputs]  # fmt: skip
    (fresh,) = run(*args)
    buf = np.full_like(fresh, np.nan)
    (got,) = run(*args, out=(buf,))
    assert got is buf
    np.testing.assert_array_equal(buf, fresh)


# -- provenance and export -------------------------------------------------------------------
def _conv_bn_relu() -> wb.Model:
    proto = wb.to_onnx(_conv_bn())
    proto.graph.node[-1].output[0] = "n"
    proto.graph.node.append(helper.make_node("Relu", ["n"], ["y"], name="relu"))
    return wb.load(proto)


def test_provenance_names_the_original_nodes():
    result = _fused(_conv_bn_relu())
    assert result.counts_by_rule() == Counter({"conv_bn": 1, "activation": 1})
    (fused,) = list(result.after.graph)
    assert result.origin(fused.name) == ("conv", "bn", "relu")
    fates = result.fates()
    assert set(fates) == {"conv", "bn", "relu"}
    for name in ("conv", "bn", "relu"):
        assert fates[name].kind == "fused" and fates[name].into == fused.name
        assert str(fates[name]).startswith(f"fused into {fused.name}")


def test_export_checks_and_round_trips():
    result = _fused(_conv_bn_relu())
    proto = wb.to_onnx(result.after)
    onnx.checker.check_model(proto)
    assert [n.domain for n in proto.graph.node] == ["workbench"]
    assert {o.domain: o.version for o in proto.opset_import}["workbench"] == 1
    feeds = _feeds(result.before)
    want = wb.Session(result.before, "reference").run(feeds)["y"]
    assert_close(wb.Session(wb.load(proto), "x86").run(feeds)["y"], want, rtol=1e-4)


# -- the zoo ---------------------------------------------------------------------------------
def _count(model: wb.Model, op: str, domain: str = "") -> int:
    return sum(1 for n in model.graph if n.op_type == op and n.domain == domain)


def _unread_constants(model: wb.Model) -> list[str]:
    return [v.name for v in model.graph.initializers.values() if not v.uses]


def _check_resnet(result) -> None:
    before, after, counts = result.before, result.after, result.counts_by_rule()
    n_bn, n_add = _count(before, "BatchNormalization"), _count(before, "Add")
    assert n_bn == _count(before, "Conv") and n_add > 0
    assert counts["conv_bn"] == n_bn and _count(after, "BatchNormalization") == 0
    assert counts["conv_add_relu"] == n_add and _count(after, "Add") == 0
    assert not _unread_constants(after)
    assert _count(after, "Relu") == 0  # after an Add or a Conv: every one fused
    fused = [n for n in after.graph if n.op_type == "FusedConv"]
    residual = [n for n in fused if len(n.inputs) > 3 and n.inputs[3] is not None]
    assert len(residual) == n_add and all(n.attrs["activation"] == "Relu" for n in residual)
    assert not _unread_constants(after)


def _check_mobilenet(result) -> None:
    before, after, counts = result.before, result.after, result.counts_by_rule()
    n_clip, n_add = _count(before, "Clip"), _count(before, "Add")
    assert counts["conv_bn"] == _count(before, "BatchNormalization") > 0
    assert _count(after, "BatchNormalization") == 0
    assert n_clip > 0 and _count(after, "Clip") == 0 and _count(after, "Constant") == 0
    clipped = [n for n in after.graph if n.attrs.get("activation") == "Clip"]
    assert len(clipped) == n_clip
    assert all(n.attrs["activation_params"] == [0.0, 6.0] for n in clipped)
    assert counts["conv_add_relu"] == n_add and _count(after, "Add") == 0
    assert not _unread_constants(after)


@pytest.mark.parametrize(
    ("name", "check"), [("tiny_resnet", _check_resnet), ("tiny_mobilenet_v2", _check_mobilenet)]
)
def test_zoo_models_fuse_every_block(name, check):
    result = optimize(wb.load(zoo.get(name)), level=2, backend="x86", strict=True)
    check(result)
    _check_outputs(result)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "check"), [("resnet50", _check_resnet), ("mobilenet_v2", _check_mobilenet)]
)
def test_full_size_zoo_models_fuse_every_block(name, check):
    result = optimize(wb.load(zoo.get(name)), level=2, backend="x86", strict=True)
    check(result)
    feeds = _feeds(result.before)
    want = wb.Session(result.before, "x86").run(feeds)["output"]
    sess = wb.Session(result.after, "x86")
    assert not sess.plan.fallbacks
    assert_close(sess.run(feeds)["output"], want, rtol=1e-4, atol=1e-4)
