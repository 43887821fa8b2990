"""The backend registry: discovery from folders, availability with reasons, kernel lookup."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

import workbench as wb
from workbench.engine.backends.base import KernelTable

registry = importlib.import_module("workbench.engine.backends")


def test_every_product_backend_is_listed_with_a_reason_when_absent():
    infos = {b.name: b for b in wb.backends()}
    assert {"reference", "x86", "cuda", "arm"} <= set(infos)
    assert infos["reference"].available and infos["x86"].available
    assert "fp64" in infos["reference"].precisions
    for info in infos.values():
        if not info.available:
            assert info.reason, f"{info.name} is unavailable without saying why"
            assert info.name in str(info) and info.reason in str(info)


def test_unknown_and_unavailable_backends_raise_clear_errors():
    with pytest.raises(wb.BackendUnavailableError, match=r"unknown backend 'tpu'.*reference"):
        wb.get_backend("tpu")
    unavailable = [b for b in wb.backends() if not b.available]
    if unavailable:
        with pytest.raises(wb.BackendUnavailableError, match=unavailable[0].name):
            wb.Session(wb.zoo.get("tiny_resnet"), unavailable[0].name)


def test_a_new_folder_is_a_new_backend(tmp_path, monkeypatch):
    pkg = tmp_path / "toy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            from workbench.engine.backends.base import Backend

            class Toy(Backend):
                name = "toy"

            BACKEND = Toy()

            @BACKEND.kernels.register("Relu")
            def relu(node, ctx):
                return lambda x: (x * (x > 0),)
            """
        )
    )
    monkeypatch.setattr(registry, "__path__", [*registry.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_BROKEN", {})
    assert "toy" in [b.name for b in wb.backends()]
    try:
        assert registry.get_backend("toy").supports("", "Relu", 17)
    finally:
        sys.modules.pop("workbench.engine.backends.toy", None)


def test_kernel_lookup_respects_opset_ranges():
    table = KernelTable()

    @table.register("Softmax", since=1, until=12)
    def old(node, ctx):
        return None

    @table.register("Softmax", since=13)
    def new(node, ctx):
        return None

    assert table.lookup("", "Softmax", 11).factory is old
    assert table.lookup("", "Softmax", 13).factory is new
    assert table.lookup("", "Softmax", 21).factory is new
    assert table.lookup("", "Relu", 13) is None
    assert table.lookup("com.example", "Softmax", 13) is None
