"""Every tiny zoo model gives the same outputs on each backend, on reference and in onnxruntime.

The tolerance is the issue's: max abs difference at most 1e-4 of the output's max magnitude.
The full-size models are checked the same way by `scripts/check_zoo.py` (`make check-zoo`).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import workbench as wb
from workbench import zoo

TINY = ["tiny_resnet", "tiny_mobilenet_v2", "tiny_bert", "tiny_gpt2"]


def _ort(proto, feeds):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _assert_matches(got: dict, want: dict, label: str) -> None:
    assert set(got) == set(want)
    for name, w in want.items():
        g = got[name]
        assert g.shape == w.shape and g.dtype == w.dtype, f"{label}: {name}"
        mag = float(np.max(np.abs(w)))
        err = float(np.max(np.abs(g.astype(np.float64) - w)))
        assert err <= 1e-4 * mag, f"{label}: {name} differs by {err:.3g} (max |y| {mag:.3g})"


@pytest.fixture(scope="module", params=TINY)
def tiny(request):
    proto = zoo.get(request.param)
    model = wb.load(proto)
    ref = wb.Session(model, "reference")
    feeds = ref.random_feeds(seed=3)
    return request.param, proto, model, feeds, ref.run(feeds)


def test_reference_matches_onnxruntime(tiny):
    name, proto, _, feeds, ref_out = tiny
    _assert_matches(ref_out, _ort(proto, feeds), f"{name} reference vs onnxruntime")


def test_backend_matches_reference_and_onnxruntime(tiny, backend):
    name, proto, model, feeds, ref_out = tiny
    out = wb.Session(model, backend).run(feeds)
    _assert_matches(out, ref_out, f"{name} {backend} vs reference")
    _assert_matches(out, _ort(proto, feeds), f"{name} {backend} vs onnxruntime")


def test_x86_level_3_matches_reference_and_onnxruntime(tiny):
    """Opt level 3 adds the channels-last layout (MobileNetV2's chains); the rest as level 2."""
    name, proto, model, feeds, ref_out = tiny
    out = wb.Session(model, "x86", level=3).run(feeds)
    _assert_matches(out, ref_out, f"{name} x86 level 3 vs reference")
    _assert_matches(out, _ort(proto, feeds), f"{name} x86 level 3 vs onnxruntime")
