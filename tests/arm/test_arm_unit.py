"""The ARM backend's parts that need no worker: the npy protocol, the pipe deadlines, the
fp16 arithmetic, names and availability messages."""

from __future__ import annotations

import os

import numpy as np
import pytest

import workbench as wb
from workbench.engine.backends.arm import fp16
from workbench.remote import protocol
from workbench.remote.client import describe_exit, raise_reply
from workbench.remote.session import parse_backend
from workbench.testing import run_node


def test_protocol_round_trip_keeps_dtype_shape_and_none():
    arrays = {
        "a": np.arange(12, dtype=np.float16).reshape(3, 4),
        "b": np.array(3, np.int64),
        "empty": np.zeros((0, 2), np.float32),
        "absent": None,
        "f": np.asfortranarray(np.ones((2, 3), np.float64)),
    }
    h, back = protocol.decode(protocol.encode({"op": "x", "n": [1, 2]}, arrays))
    assert h == {"op": "x", "n": [1, 2]}
    assert back.keys() == arrays.keys() and back["absent"] is None
    for k, v in arrays.items():
        if v is not None:
            assert back[k].dtype == v.dtype and back[k].shape == v.shape
            np.testing.assert_array_equal(back[k], v)


def test_protocol_never_pickles():
    with pytest.raises(protocol.ProtocolError, match="dtype object"):
        protocol.encode({}, {"o": np.array([{"a": 1}], dtype=object)})
    body = protocol.encode({}, {"x": np.ones(3)})
    assert b"pickle" not in body and b"\x80\x04" not in body[:64]


def test_pipe_read_has_a_deadline():
    r, w = os.pipe()
    try:
        with pytest.raises(protocol.Timeout):
            protocol.read_frame(r, deadline=__import__("time").monotonic() + 0.2)
        protocol.write_frame(w, protocol.encode({"ok": True}))
        assert protocol.decode(protocol.read_frame(r))[0] == {"ok": True}
        os.close(w)
        with pytest.raises(EOFError):
            protocol.read_frame(r)
    finally:
        os.close(r)


def test_matmul_acc16_rounds_every_fma_to_fp16():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 50)).astype(np.float16)
    b = rng.standard_normal((50, 4)).astype(np.float16)
    got = fp16.matmul_acc16(a, b)
    want = np.zeros((3, 4), np.float16)
    for k in range(50):  # the definition, one element at a time
        for i in range(3):
            for j in range(4):
                want[i, j] = np.float16(float(want[i, j]) + float(a[i, k]) * float(b[k, j]))
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, want)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    acc32 = (a.astype(np.float32) @ b.astype(np.float32)).astype(np.float16)
    # fp16 accumulation loses more than one final rounding does
    assert np.abs(got - exact).max() > np.abs(acc32 - exact).max()


def test_conv_acc16_matches_reference_within_fp16_error():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 7, 6)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    node = wb.Node(
        "Conv", [], [], {"strides": [2, 1], "pads": [1, 0, 1, 2], "group": 2, "dilations": [1, 2]}
    )
    y = fp16.conv_acc16(node, x.astype(np.float16), w.astype(np.float16))
    (ref,) = run_node(
        "reference",
        "Conv",
        [x.astype(np.float16).astype(np.float32), w.astype(np.float16).astype(np.float32)],
        {"strides": [2, 1], "pads": [1, 0, 1, 2], "group": 2, "dilations": [1, 2]},
    )
    assert y.shape == ref.shape and y.dtype == np.float16
    err = np.abs(y.astype(np.float64) - ref)
    assert 0 < err.max() < 18 * 2**-10 * np.abs(ref).max()  # K=18 terms of fp16 roundoff


def test_backend_names_and_variants():
    assert parse_backend("arm") == ("arm", None, None)
    assert parse_backend("arm:fp16") == ("arm", "fp16", "fp16")
    assert parse_backend("arm:fp16-acc32") == ("arm", "fp16", "fp32")
    with pytest.raises(wb.WorkbenchError, match="unknown variant 'bf16'"):
        parse_backend("arm:bf16")


def test_unavailable_says_how_to_set_up(tmp_path, monkeypatch):
    from workbench.remote import client

    if client.native_host():
        pytest.skip("aarch64 host: the arm worker runs natively, no setup")
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))  # an empty cache: nothing set up
    info = {b.name: b for b in wb.backends()}["arm"]
    assert not info.available
    assert "workbench arm setup" in info.reason or "qemu" in info.reason
    with pytest.raises(wb.BackendUnavailableError, match="arm"):
        wb.Session(wb.load(__import__("workbench.zoo").zoo.get("tiny_resnet")), "arm")


def test_failed_replies_become_workbench_errors():
    assert describe_exit(-9) == "killed by signal SIGKILL (9)"
    assert describe_exit(3) == "exited with code 3"
    with pytest.raises(wb.KernelError, match="node 'n'"):
        raise_reply({"type": "KernelError", "error": "node 'n' failed"}, "the arm worker (run)")
    with pytest.raises(wb.WorkbenchError, match="ValueError: bad"):
        raise_reply({"type": "ValueError", "error": "bad"}, "the arm worker (run)")
