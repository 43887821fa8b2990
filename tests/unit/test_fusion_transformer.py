"""The transformer fusion family: gelu, layernorm, attention, and their kernels.

For each rule: graphs made for it (every exporter form it claims), how many rewrites fire,
outputs before and after equal on `reference` and `x86` (fp32 tolerance) with the fused
nodes running natively, and candidates the rule must refuse, with their recorded reasons.
Then the kernels against the reference definitions, provenance, export, and the zoo's
BERT and GPT-2 (fused in every layer).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import workbench as wb
from workbench import zoo
from workbench.engine.passes import optimize
from workbench.engine.passes.fusion import attention, gelu, layernorm
from workbench.testing import (
    assert_close,
    assert_same_outputs,
    graph_model,
    op_names,
    rejection_reasons,
    run_node,
)

FAMILY = [*gelu.PASSES, *layernorm.PASSES, *attention.PASSES]
MINE = ("gelu", "layernorm", "attention")
BACKENDS = ("reference", "x86")
F = TensorProto.FLOAT
RNG = np.random.default_rng(0)
N = helper.make_node
SHAPE = [2, 3, 8]


def _rand(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


_model = graph_model  # shared with the other pass tests


def _fused(model: wb.Model, backend: str = "x86", passes=FAMILY, level: int = 2):
    """Optimized with this family alone (`passes=None`: the whole pipeline)."""
    return optimize(model, level, backend, passes=passes, strict=True)


def _check_outputs(model: wb.Model, feeds: dict[str, np.ndarray] | None = None, **optimize_kw):
    """Optimized for each backend, before and after agree there; no fused node falls back."""
    feeds = feeds or wb.Session(model, "reference").random_feeds(seed=1)
    for backend in BACKENDS:
        result = _fused(model, backend, **optimize_kw)
        assert result.changes, f"nothing fused for {backend}"
        after = assert_same_outputs(result.before, result.after, feeds, backend, rtol=1e-4)
        new = {n for c in result.changes if c.rule in MINE for n in c.added}
        fallbacks = [s.node.name for s in after.plan.fallbacks if s.node.name in new]
        assert not fallbacks, f"fused nodes fell back to reference on {backend}: {fallbacks}"


_ops, _reasons = op_names, rejection_reasons


# -- gelu --------------------------------------------------------------------------------------


def _gelu_erf(form: str = "half_last", divisor: float = math.sqrt(2.0), half: float = 0.5,
              opset: int = 17, extra_use: bool = False) -> wb.Model:  # fmt: skip
    """x * (1 + erf(x / sqrt2)) * 0.5 with the 0.5 last, first or on the (1 + erf) term;
    'mul' scales by 1/sqrt(2) instead of dividing."""
    inits = [("one", np.float32(1.0)), ("half", np.float32(half))]
    if form == "mul":
        inits.append(("c", np.float32(1.0 / divisor)))
        nodes = [N("Mul", ["c", "x"], ["s"], name="scale")]
    else:
        inits.append(("c", np.float32(divisor)))
        nodes = [N("Div", ["x", "c"], ["s"], name="scale")]
    nodes += [N("Erf", ["s"], ["e"], name="erf"), N("Add", ["one", "e"], ["t"], name="add")]
    if form == "half_first":
        nodes += [N("Mul", ["x", "half"], ["p"], name="m1"), N("Mul", ["t", "p"], ["y"], name="m2")]
    elif form == "half_term":
        nodes += [N("Mul", ["t", "half"], ["p"], name="m1"), N("Mul", ["x", "p"], ["y"], name="m2")]
    else:  # half_last and mul
        nodes += [N("Mul", ["x", "t"], ["p"], name="m1"), N("Mul", ["p", "half"], ["y"], name="m2")]
    outputs = [("y", SHAPE)]
    if extra_use:
        nodes.append(N("Neg", ["e"], ["z"], name="neg"))
        outputs.append(("z", SHAPE))
    return _model(nodes, [("x", SHAPE)], outputs, inits, opset)


def _gelu_tanh(cube: str = "pow", coef: float = 0.044715, opset: int = 17) -> wb.Model:
    """0.5 * x * (1 + tanh(sqrt(2/pi) * (x + coef * x^3))): gpt2's grouping with Pow, or
    x*x*x with the 0.5 applied last."""
    inits = [("one", np.float32(1.0)), ("half", np.float32(0.5)), ("k", np.float32(coef))]
    inits += [("c", np.float32(math.sqrt(2 / math.pi))), ("three", np.float32(3.0))]
    if cube == "pow":
        nodes = [N("Pow", ["x", "three"], ["x3"], name="pow")]
    else:
        nodes = [N("Mul", ["x", "x"], ["x2"], name="sq"), N("Mul", ["x2", "x"], ["x3"], name="cb")]
    nodes += [
        N("Mul", ["k", "x3"], ["kx3"], name="coef"),
        N("Add", ["x", "kx3"], ["inner"], name="inner"),
        N("Mul", ["c", "inner"], ["u"], name="scale"),
        N("Tanh", ["u"], ["th"], name="tanh"),
        N("Add", ["one", "th"], ["t"], name="add"),
    ]
    if cube == "pow":
        nodes += [
            N("Mul", ["half", "x"], ["hx"], name="m1"),
            N("Mul", ["hx", "t"], ["y"], name="m2"),
        ]
    else:
        nodes += [N("Mul", ["x", "t"], ["p"], name="m1"), N("Mul", ["p", "half"], ["y"], name="m2")]
    return _model(nodes, [("x", SHAPE)], [("y", SHAPE)], inits, opset)


GELU_FORMS = [
    ("erf_half_last", lambda o: _gelu_erf("half_last", opset=o), "none"),
    ("erf_half_first", lambda o: _gelu_erf("half_first", opset=o), "none"),
    ("erf_half_term", lambda o: _gelu_erf("half_term", opset=o), "none"),
    ("erf_mul", lambda o: _gelu_erf("mul", opset=o), "none"),
    ("tanh_pow", lambda o: _gelu_tanh("pow", opset=o), "tanh"),
    ("tanh_cube", lambda o: _gelu_tanh("cube", opset=o), "tanh"),
]


@pytest.mark.parametrize(
    ("form", "build", "approximate"), GELU_FORMS, ids=[f[0] for f in GELU_FORMS]
)
def test_gelu_forms_become_one_workbench_gelu(form, build, approximate):
    model = build(17)
    result = _fused(model)
    assert result.counts_by_rule() == Counter({"gelu": 1}), result.summary()
    assert _ops(result.after) == ["workbench.Gelu"]
    node = result.after.graph.nodes[0]
    assert node.attrs == {"approximate": approximate}
    assert node.inputs[0].name == "x" and node.outputs[0].name == "y"
    assert len(result.changes[0].origin) == len(model.graph.nodes)  # every node accounted for
    _check_outputs(model, {"x": _rand(*SHAPE, scale=3.0)})


@pytest.mark.parametrize("build", [_gelu_erf, _gelu_tanh])
def test_gelu_from_opset_20_is_the_standard_op(build):
    model = build(opset=20)
    result = _fused(model)
    assert _ops(result.after) == ["Gelu"] and result.after.graph.nodes[0].domain == ""
    assert "workbench" not in result.after.opset_imports
    _check_outputs(model, {"x": _rand(*SHAPE, scale=3.0)})


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (_gelu_erf(divisor=1.5), "Erf input is x/1.5, not x/sqrt(2)"),
        (_gelu_erf("mul", divisor=2.0), "Erf input is x*0.5, not x/sqrt(2)"),
        (_gelu_erf(half=0.25), "GELU product scales by 0.25, not 0.5"),
        (_gelu_tanh(coef=0.05), "the cubic term is 0.05 x^3, not 0.044715 x^3"),
        (_gelu_erf(extra_use=True), "Erf output 'e' has a second consumer (Neg 'neg')"),
    ],
    ids=["erf_divisor", "erf_factor", "half", "tanh_coefficient", "second_consumer"],
)
def test_gelu_refusals_say_why(model, reason):
    result = _fused(model)
    assert not result.changes
    assert _reasons(result, "gelu") == [reason]


def test_gelu_refused_for_a_backend_without_the_kernel(bare_backend):
    result = _fused(_gelu_erf(), backend=bare_backend)
    assert _reasons(result, "gelu") == ["backend 'bare' has no kernel for workbench.Gelu"]


# -- layernorm ---------------------------------------------------------------------------------


def _layernorm(opset: int = 17, *, axes=(-1,), affine: str = "both", square: str = "pow",
               exponent: float = 2.0, eps_input: bool = False) -> wb.Model:  # fmt: skip
    """The exporter's decomposition; `affine` is both, gamma, beta or none; axes are an
    attribute before opset 18 and an input from 18."""
    inits = [("two", np.float32(exponent)), ("gamma", _rand(8) + 1), ("beta", _rand(8))]
    inputs = [("x", SHAPE)]
    if eps_input:
        inputs.append(("eps", []))
    else:
        inits.append(("eps", np.float32(1e-5)))

    def mean(src, out, name):
        if opset >= 18:
            return N("ReduceMean", [src, "axes"], [out], name=name, keepdims=1)
        return N("ReduceMean", [src], [out], name=name, axes=list(axes), keepdims=1)

    if opset >= 18:
        inits.append(("axes", np.array(axes, np.int64)))
    square_node = (
        N("Pow", ["d", "two"], ["sq"], name="pow")
        if square == "pow"
        else N("Mul", ["d", "d"], ["sq"], name="sq")
    )
    nodes = [
        mean("x", "mu", "mean"),
        N("Sub", ["x", "mu"], ["d"], name="sub"),
        square_node,
        mean("sq", "var", "var"),
        N("Add", ["var", "eps"], ["ve"], name="add_eps"),
        N("Sqrt", ["ve"], ["std"], name="sqrt"),
        N("Div", ["d", "std"], ["n" if affine != "none" else "y"], name="div"),
    ]
    if affine == "both":
        nodes += [
            N("Mul", ["gamma", "n"], ["g"], name="mul"),
            N("Add", ["g", "beta"], ["y"], name="add"),
        ]
    elif affine == "gamma":
        nodes.append(N("Mul", ["n", "gamma"], ["y"], name="mul"))
    elif affine == "beta":
        nodes.append(N("Add", ["beta", "n"], ["y"], name="add"))
    return _model(nodes, inputs, [("y", SHAPE)], inits, opset)


@pytest.mark.parametrize(
    ("opset", "affine", "square", "op"),
    [
        (17, "both", "pow", "LayerNormalization"),
        (18, "both", "pow", "LayerNormalization"),
        (17, "gamma", "mul", "LayerNormalization"),
        (17, "beta", "pow", "LayerNormalization"),
        (18, "none", "pow", "LayerNormalization"),
        (16, "both", "pow", "workbench.LayerNorm"),
    ],
)
def test_layernorm_decomposition_becomes_one_node(opset, affine, square, op):
    model = _layernorm(opset, affine=affine, square=square)
    result = _fused(model)
    assert result.counts_by_rule() == Counter({"layernorm": 1}), result.summary()
    assert _ops(result.after) == [op]
    node = result.after.graph.nodes[0]
    assert node.attrs == {"axis": -1, "epsilon": pytest.approx(1e-5)}
    assert node.inputs[0].name == "x" and node.outputs[0].name == "y"
    if affine in ("both", "gamma"):
        assert node.inputs[1].name == "gamma"
    else:  # a unit Scale made for it
        assert np.array_equal(node.inputs[1].const, np.ones(8, np.float32))
    assert (len(node.inputs) == 3) == (affine in ("both", "beta"))
    _check_outputs(model, {"x": _rand(*SHAPE, scale=2.0) + 3.0})


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (_layernorm(axes=(1,)), "ReduceMean axes [1] are not the last axis"),
        (_layernorm(18, axes=(1,)), "ReduceMean axes [1] are not the last axis"),
        (_layernorm(eps_input=True), "epsilon is not constant"),
        (_layernorm(exponent=3.0), "Pow exponent is 3, not 2"),
    ],
    ids=["axes_attribute", "axes_input", "epsilon", "exponent"],
)
def test_layernorm_refusals_say_why(model, reason):
    result = _fused(model)
    assert not result.changes
    assert _reasons(result, "layernorm") == [reason]


def test_layernorm_with_a_residual_add_after_it_fuses_up_to_the_gamma():
    """An Add of a runtime tensor after Mul(gamma) is a residual, not the beta."""
    model = _layernorm(affine="gamma")
    proto = wb.to_onnx(model)
    proto.graph.node.append(N("Add", ["y", "x"], ["r"], name="residual"))
    proto.graph.output.append(helper.make_tensor_value_info("r", F, SHAPE))
    model = wb.load(proto)
    result = _fused(model)
    assert _ops(result.after) == ["LayerNormalization", "Add"]
    _check_outputs(model, {"x": _rand(*SHAPE)})


# -- attention ---------------------------------------------------------------------------------

B, S, HEADS, DIM = 2, 5, 2, 4
HIDDEN = HEADS * DIM


def _attention(*, mask: str | None = "add", scale: str = "div", keys: str = "one_transpose",
               softmax_axis: int = -1, probs_output: bool = False,
               fill: float = -3.4028234663852886e38) -> wb.Model:  # fmt: skip
    """Multi-head attention on 3-D q, k, v as BERT's exporter writes it. `mask`: None,
    'add' (an additive [b, 1, 1, s] input), 'where' (a runtime bool condition) or 'causal'
    (Where of a constant lower triangle, filling with `fill`); `scale`:
    'div' / 'mul' after the MatMul or 'q' on Q before it; `keys`: K^T by one Transpose or
    by two."""
    inits = [
        ("split", np.array([0, 0, HEADS, DIM], np.int64)),
        ("merge", np.array([0, 0, HIDDEN], np.int64)),
        ("sqrt_d", np.float32(math.sqrt(DIM))),
        ("inv_sqrt_d", np.float32(1 / math.sqrt(DIM))),
        ("neg", np.float32(-3.4028234663852886e38)),
    ]
    inputs = [(n, [B, S, HIDDEN]) for n in ("q", "k", "v")]
    nodes = []
    for n in ("q", "k", "v"):
        nodes.append(N("Reshape", [n, "split"], [f"{n}4"], name=f"{n}_split"))
        perm = [0, 2, 3, 1] if n == "k" and keys == "one_transpose" else [0, 2, 1, 3]
        nodes.append(N("Transpose", [f"{n}4"], [f"{n}t"], name=f"{n}_heads", perm=perm))
    if keys == "two_transposes":
        nodes.append(N("Transpose", ["kt"], ["ktt"], name="k_swap", perm=[0, 1, 3, 2]))
    kt = "ktt" if keys == "two_transposes" else "kt"
    if scale == "q":
        nodes.append(N("Mul", ["qt", "inv_sqrt_d"], ["qs"], name="q_scale"))
        nodes.append(N("MatMul", ["qs", kt], ["scores"], name="qk"))
    else:
        nodes.append(N("MatMul", ["qt", kt], ["raw"], name="qk"))
        if scale == "div":
            nodes.append(N("Div", ["raw", "sqrt_d"], ["scores"], name="scale"))
        else:
            nodes.append(N("Mul", ["inv_sqrt_d", "raw"], ["scores"], name="scale"))
    logits = "scores"
    if mask == "add":
        inputs.append(("mask", [B, 1, 1, S]))
        nodes.append(N("Add", ["scores", "mask"], ["masked"], name="mask"))
        logits = "masked"
    elif mask == "where":
        inputs.append(("cond", [1, 1, S, S], TensorProto.BOOL))
        nodes.append(N("Where", ["cond", "scores", "neg"], ["masked"], name="mask"))
        logits = "masked"
    elif mask == "causal":  # a constant triangle, as folding leaves GPT-2's sliced buffer
        inits += [("tri", np.tri(S, dtype=bool)[None, None]), ("fill", np.float32(fill))]
        nodes.append(N("Where", ["tri", "scores", "fill"], ["masked"], name="mask"))
        logits = "masked"
    nodes += [
        N("Softmax", [logits], ["probs"], name="softmax", axis=softmax_axis),
        N("MatMul", ["probs", "vt"], ["ctx"], name="pv"),
        N("Transpose", ["ctx"], ["ctx_t"], name="merge_t", perm=[0, 2, 1, 3]),
        N("Reshape", ["ctx_t", "merge"], ["y"], name="merge"),
    ]
    outputs = [("y", [B, S, HIDDEN])]
    if probs_output:
        outputs.append(("probs", [B, HEADS, S, S]))
    return _model(nodes, inputs, outputs, inits)


def _attention_feeds(mask: bool = True) -> dict[str, np.ndarray]:
    feeds = {n: _rand(B, S, HIDDEN) for n in ("q", "k", "v")}
    if mask:
        keep = np.ones((B, 1, 1, S), np.float32)
        keep[1, ..., -2:] = 0  # the second sequence is padded
        feeds["mask"] = (1 - keep) * np.float32(-3.4028234663852886e38)
    return feeds


@pytest.mark.parametrize(
    ("mask", "scale", "keys"),
    [
        ("add", "div", "one_transpose"),
        (None, "div", "one_transpose"),
        ("add", "mul", "two_transposes"),
        (None, "q", "one_transpose"),
    ],
)
def test_attention_becomes_one_node(mask, scale, keys):
    model = _attention(mask=mask, scale=scale, keys=keys)
    result = _fused(model)
    assert result.counts_by_rule() == Counter({"attention": 1}), result.summary()
    assert _ops(result.after) == ["workbench.Attention"]
    node = result.after.graph.nodes[0]
    assert [v.name for v in node.inputs] == ["q", "k", "v"] + (["mask"] if mask else [])
    assert node.attrs["num_heads"] == HEADS
    assert node.attrs["scale"] == pytest.approx(1 / math.sqrt(DIM))
    assert "causal" not in node.attrs
    assert node.outputs[0].name == "y"
    _check_outputs(model, _attention_feeds(mask is not None))


def test_causal_attention_from_a_constant_triangle():
    model = _attention(mask="causal", scale="mul")
    result = _fused(model)
    assert _ops(result.after) == ["workbench.Attention"]
    node = result.after.graph.nodes[0]
    assert [v.name for v in node.inputs] == ["q", "k", "v"] and node.attrs["causal"] == 1
    _check_outputs(model, _attention_feeds(mask=False))


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (_attention(softmax_axis=2), "Softmax axis is 2, not the last axis"),
        (_attention(mask="where"), "Where condition is not a recognised causal mask"),
        (_attention(probs_output=True), "Softmax output 'probs' is a graph output"),
        (
            _attention(mask="causal", fill=-5.0),
            "Where fills masked scores with -5, not a large negative number",
        ),
    ],
    ids=["softmax_axis", "where_not_causal", "probs_read", "where_fill"],
)
def test_attention_refusals_say_why(model, reason):
    result = _fused(model)
    assert not result.changes
    assert _reasons(result, "attention") == [reason]


def test_attention_with_the_shape_arithmetic_of_dynamic_exports(transformer_model):
    """conftest's layer builds its Reshape targets from Shape/Gather/Concat: those nodes
    feed only the fused pattern, so they go with it."""
    model = wb.load(transformer_model(18))
    result = _fused(model)
    assert result.counts_by_rule() == Counter({"attention": 1, "gelu": 1})
    assert not {"Shape", "Concat", "Reshape", "Transpose", "Softmax"} & set(_ops(result.after))
    _check_outputs(model, {"input_ids": RNG.integers(0, 32, (2, 5))})


# -- kernels against the reference definitions -------------------------------------------------


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_kernel_matches_the_reference(approximate):
    x = np.concatenate([np.linspace(-12, 12, 2001), [0.0, -0.0, 1e-30, -1e-30]])
    x = x.astype(np.float32).reshape(5, -1)
    attrs = {"approximate": approximate}
    (want,) = run_node("reference", "Gelu", [x], attrs, domain="workbench", opset=1,
                       precision="fp64")  # fmt: skip
    (got,) = run_node("x86", "Gelu", [x], attrs, domain="workbench", opset=1, expect_native=True)
    assert got.dtype == np.float32
    # within an ulp, or 5e-8 where x < -5.66 gives erf = -1 (and y < 4.3e-8 in magnitude)
    assert_close(got, want.astype(np.float32), rtol=2e-7, atol=5e-8, scale=False)
    (scalar,) = run_node("x86", "Gelu", [np.float32(1.5)], attrs, domain="workbench", opset=1)
    if approximate == "none":
        expected = 0.75 * (1 + math.erf(1.5 / math.sqrt(2)))
    else:
        expected = 0.75 * (1 + math.tanh(math.sqrt(2 / math.pi) * (1.5 + 0.044715 * 1.5**3)))
    assert scalar.shape == () and float(scalar) == pytest.approx(expected, rel=1e-6)
    (nan,) = run_node("x86", "Gelu", [np.float32([np.nan, 1])], attrs, domain="workbench", opset=1)
    assert np.isnan(nan[0]) and not np.isnan(nan[1])


def test_layernorm_kernel_matches_the_reference():
    x = _rand(3, 4, 16, scale=4.0) + 10
    ins = [x, _rand(16) + 1, _rand(16)]
    attrs = {"axis": -1, "epsilon": 1e-12}
    for inputs in (ins, ins[:2]):
        (want,) = run_node("reference", "LayerNorm", inputs, attrs, domain="workbench", opset=1)
        (got,) = run_node("x86", "LayerNorm", inputs, attrs, domain="workbench", opset=1,
                          expect_native=True)  # fmt: skip
        assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("sq", "sk", "mask_shape", "causal", "scale"),
    [
        (5, 5, None, 0, 0.3),
        (5, 5, (2, 1, 1, 5), 0, 0.0),
        (4, 6, (2, 3, 4, 6), 1, 0.5),
        (6, 6, (6, 6), 1, 0.25),
        (3, 40, (1, 3, 1, 40), 0, 0.1),
        (2, 3, (2, 1, 2, 1), 0, 0.5),
    ],
)
def test_attention_kernel_matches_the_reference(sq, sk, mask_shape, causal, scale):
    heads, d, dv = 3, 4, 5
    rng = np.random.default_rng(sq * 100 + sk)
    q, k, v = (rng.standard_normal((2, n, heads * w)).astype(np.float32)
               for n, w in ((sq, d), (sk, d), (sk, dv)))  # fmt: skip
    inputs = [q, k, v]
    if mask_shape is not None:
        # -30, not -1e9: a row masked whole keeps its score differences in float32 then
        inputs.append(np.where(rng.random(mask_shape) < 0.3, -30, 0).astype(np.float32))
    attrs = {"num_heads": heads, "scale": scale, "causal": causal}
    (want,) = run_node("reference", "Attention", inputs, attrs, domain="workbench", opset=1,
                       precision="fp64")  # fmt: skip
    (got,) = run_node("x86", "Attention", inputs, attrs, domain="workbench", opset=1,
                      expect_native=True)  # fmt: skip
    assert got.shape == (2, sq, heads * dv)
    assert_close(got, want.astype(np.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", ["heads", "batched"])
@pytest.mark.parametrize(("sq", "sk", "mask_shape", "causal"), [
    (7, 7, None, 0), (5, 9, (1, 1, 1, 9), 0), (9, 9, None, 1), (3, 11, (2, 3, 3, 11), 1),
])  # fmt: skip
def test_attention_on_views_of_one_projection_matches_the_reference(
    monkeypatch, path, sq, sk, mask_shape, causal
):
    """Q, K and V as column ranges of one fused projection (rows 3x wider than a head
    group), odd lengths and head sizes: by MKL head by head on numba's threads
    (`attention_heads`, where MKL and numba's threads are here), and by the batched
    matmul it falls back to."""
    from workbench.engine.backends.x86 import _mkl, _native, attention_heads

    heads, d = 3, 5
    rng = np.random.default_rng(sq * 10 + sk)
    qkv = rng.standard_normal((2, max(sq, sk), 3 * heads * d)).astype(np.float32)
    q = qkv[:, :sq, : heads * d]
    k, v = qkv[:, :sk, heads * d : 2 * heads * d], qkv[:, :sk, 2 * heads * d :]
    inputs = [q, k, v]
    if mask_shape is not None:
        inputs.append(np.where(rng.random(mask_shape) < 0.3, -30, 0).astype(np.float32))
    attrs = {"num_heads": heads, "causal": causal}
    made = []
    real = attention_heads.heads_call

    def spy(*args):
        made.append(None if path == "batched" else real(*args))
        return made[-1]

    monkeypatch.setattr(attention_heads, "heads_call", spy)
    (want,) = run_node("reference", "Attention", inputs, attrs, domain="workbench", opset=1,
                       precision="fp64")  # fmt: skip
    (got,) = run_node("x86", "Attention", inputs, attrs, domain="workbench", opset=1,
                      expect_native=True)  # fmt: skip
    assert_close(got, want.astype(np.float32), rtol=1e-5, atol=1e-6)
    if path == "heads" and _mkl.available() and _native.available():
        assert made and made[-1] is not None  # (the heads path ran)


def test_attention_kernel_spreads_nan_like_the_reference():
    q, k, v = _rand(1, 3, 4), _rand(1, 3, 4), _rand(1, 3, 4)
    q[0, 1, 0] = np.nan
    attrs = {"num_heads": 2, "scale": 0.5}
    (want,) = run_node("reference", "Attention", [q, k, v], attrs, domain="workbench", opset=1)
    (got,) = run_node("x86", "Attention", [q, k, v], attrs, domain="workbench", opset=1)
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.isnan(got).any()


def test_attention_row_max_on_the_bits_is_numpys_max():
    """The softmax's row maximum, taken on the values' bits: infinities, signed zeros,
    denormals, a prefix of the row, no values at all (-inf), a NaN."""
    from workbench.engine.backends.x86.ops_fused_transformer import _row_max

    rows = [
        np.random.default_rng(3).standard_normal(37),
        [-np.inf, -np.inf],
        [-0.0, -1.0],
        [-1.0, -0.0, -3.0],
        [np.inf, 3.0],
        [-5e-39, -3e-39, -4e-39],
        [-3.3e38, -30.0, -3.4e38],
        [np.nan, 3.0],
    ]
    for row in rows:
        x = np.asarray(row, np.float32)
        got = _row_max(x.view(np.int32), x.size)
        np.testing.assert_array_equal(got, np.max(x))
        assert np.signbit(got) == np.signbit(np.max(x))
    x = np.float32([1.0, -2.0, 7.0])
    assert _row_max(x.view(np.int32), 2) == 1.0  # the first n only
    assert _row_max(x.view(np.int32), 0) == -np.inf


def test_attention_kernel_names_the_node_on_bad_shapes():
    q, k, v = _rand(1, 3, 6), _rand(1, 4, 6), _rand(1, 5, 6)
    with pytest.raises(wb.WorkbenchError, match=r"Attention.*one key/value length"):
        run_node("x86", "Attention", [q, k, v], {"num_heads": 2}, domain="workbench", opset=1)
    mask = np.zeros((1, 1, 3, 3), np.float32)
    with pytest.raises(wb.WorkbenchError, match="mask \\(1, 1, 3, 3\\) does not broadcast"):
        run_node("x86", "Attention", [q, k, k, mask], {"num_heads": 2}, domain="workbench",
                 opset=1)  # fmt: skip


@pytest.mark.parametrize("name", ["tiny_bert", "tiny_gpt2"])
def test_fused_kernels_write_into_the_memory_arena(name):
    """From its second run with one input signature a session computes in its memory arena:
    Gelu and Attention then write into the buffers they are given (Gelu possibly over its
    own input), and the results stay those of a fresh run."""
    model = _fused(wb.load(zoo.get(name))).after
    sess = wb.Session(model, "x86")
    writes = {row["op"]: row["writes_out"] for row in sess.kernels()}
    assert writes["Gelu"] and writes["Attention"]
    feeds = sess.random_feeds(seed=4)
    first = sess.run(feeds)
    for _ in range(2):
        again = sess.run(feeds)
        for key, value in first.items():
            np.testing.assert_array_equal(again[key], value)
    assert sess.memory is not None


# -- zoo models, provenance, export ------------------------------------------------------------


def _zoo_counts(result) -> Counter:
    return Counter({r: n for r, n in result.counts_by_rule().items() if r in MINE})


@pytest.mark.parametrize("name", ["tiny_bert", "tiny_gpt2"])
def test_zoo_transformers_are_fused_in_every_layer(name):
    """Through the whole level-2 pipeline (cleanups first, other fusions after): each of the
    2 layers has its GELU, its attention and 2 LayerNorms, plus the embedding LayerNorm
    (BERT) or the final one (GPT-2)."""
    model = wb.load(zoo.get(name))
    result = optimize(model, level=2, backend="x86", strict=True)
    assert _zoo_counts(result) == Counter({"gelu": 2, "layernorm": 5, "attention": 2})
    left = set(_ops(result.after))
    assert not {"Erf", "Tanh", "Pow", "ReduceMean", "Sqrt", "Softmax", "Where"} & left
    attentions = [n for n in result.after.graph if n.op_type == "Attention"]
    causal = [n.attrs.get("causal", 0) for n in attentions]
    assert causal == ([1, 1] if name == "tiny_gpt2" else [0, 0])
    assert not any(r.rule in MINE for r in result.rejected)
    feeds = wb.Session(model, "reference").random_feeds({"batch": 2}, seed=3)
    if "attention_mask" in feeds:
        feeds["attention_mask"] = np.ones_like(feeds["attention_mask"])
        feeds["attention_mask"][0, -3:] = 0  # padding, so the mask matters
    _check_outputs(model, feeds, passes=None, level=2)


def test_gpt2_with_static_shapes_folds_the_causal_mask_and_still_fuses():
    """With every dim known, level-1 folding turns GPT-2's sliced causal buffer into a
    constant [1, 1, 8, 8] condition: the rule recognises the constant triangle too."""
    proto = zoo.get("tiny_gpt2")
    for dim in proto.graph.input[0].type.tensor_type.shape.dim:
        dim.dim_value = {"batch": 2, "sequence": 8}[dim.dim_param]
    model = wb.load(proto)
    folded = optimize(model, level=1, strict=True).after
    wheres = [n for n in folded.graph if n.op_type == "Where"]
    assert wheres and all(n.inputs[0].const is not None for n in wheres)
    result = optimize(model, level=2, strict=True)
    attentions = [n for n in result.after.graph if n.op_type == "Attention"]
    assert [n.attrs.get("causal") for n in attentions] == [1, 1]
    _check_outputs(model, passes=None, level=2)


def test_provenance_of_a_fused_bert_layer():
    model = wb.load(zoo.get("tiny_bert"))
    result = _fused(model)
    prefix = "/encoder/layer.0/attention/self/"
    (attn,) = [n for n in result.after.graph if n.op_type == "Attention" and prefix in n.name]
    origin = result.origin(attn.name)
    for part in ("Reshape", "Transpose_1", "MatMul", "Div", "Add", "Softmax", "MatMul_1",
                 "Transpose_3", "Reshape_3", "Constant_3"):  # fmt: skip
        assert prefix + part in origin
    assert "/Mul" not in origin  # the extended mask is an input, computed outside
    fates = result.fates()
    assert fates[prefix + "Softmax"].kind == "fused"
    assert (
        fates[prefix + "Softmax"].into == attn.name
        and fates[prefix + "Softmax"].rule == "attention"
    )
    erf = "/encoder/layer.1/intermediate/intermediate_act_fn/Erf"
    assert fates[erf].rule == "gelu" and result.origin(fates[erf].into)[-1].endswith("Mul_1")
    ln = "/embeddings/LayerNorm/ReduceMean"
    assert fates[ln].rule == "layernorm" and fates[ln].into.endswith("LayerNormalization")
    assert fates["/embeddings/word_embeddings/Gather"].kind == "kept"


@pytest.mark.parametrize(
    ("opset", "workbench_ops"),
    [(16, {"LayerNorm", "Gelu", "Attention"}), (17, {"Gelu", "Attention"}), (20, {"Attention"})],
)
def test_export_passes_the_onnx_checker(opset, workbench_ops):
    model = wb.load(zoo.get("tiny_bert", opset=opset))
    result = _fused(model)
    proto = wb.to_onnx(result.after)
    onnx.checker.check_model(proto)
    assert {n.op_type for n in proto.graph.node if n.domain == "workbench"} == workbench_ops
    assert {o.domain: o.version for o in proto.opset_import}["workbench"] == 1
    again = wb.load(proto)
    feeds = wb.Session(model, "reference").random_feeds(seed=2)
    got = wb.Session(again, "x86").run(feeds)["last_hidden_state"]
    want = wb.Session(model, "x86").run(feeds)["last_hidden_state"]
    assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_full_bert_is_fused_in_all_12_layers():
    model = wb.load(zoo.get("bert"))
    result = optimize(model, level=2, backend="x86", strict=True)
    assert _zoo_counts(result) == Counter({"gelu": 12, "layernorm": 25, "attention": 12})
    feeds = wb.Session(model, "x86").random_feeds({"batch": 1, "sequence": 16}, seed=0)
    want = wb.Session(result.before, "x86").run(feeds)["last_hidden_state"]
    got = wb.Session(result.after, "x86").run(feeds)["last_hidden_state"]
    assert_close(got, want, rtol=1e-4, atol=1e-5)
