"""The `workbench` command: run, backends, zoo, optimize; errors are one line, exit 2."""

from __future__ import annotations

import onnx

from workbench.cli import main


def test_run_compares_every_available_backend_with_reference(capsys):
    assert main(["run", "tiny_resnet", "--repeat", "1", "--no-onnxruntime"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "output[1, 10]" in lines["reference"] and "output[1, 10]" in lines["x86"]
    assert "0 fallback" in lines["x86"]
    assert "not run: cuda" in out or "cuda" in lines  # listed either way, with its reason


def test_optimize_prints_counts_and_writes_a_checked_model(tmp_path, capsys):
    path = tmp_path / "opt.onnx"
    assert main(["optimize", "tiny_resnet", "--level", "2", "-o", str(path)]) == 0
    out = capsys.readouterr().out
    assert "41 -> 16 nodes at level 2" in out and "conv_bn: 12" in out
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    assert any(n.domain == "workbench" for n in proto.graph.node)


def test_backends_and_zoo_list(capsys):
    assert main(["backends"]) == 0
    assert "x86: native" in capsys.readouterr().out
    assert main(["zoo"]) == 0
    assert "tiny_bert" in capsys.readouterr().out


def test_bad_model_argument_is_one_line_and_exit_2(capsys):
    assert main(["run", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("workbench: error: 'no_such_model' is neither an ONNX file nor a zoo")
    assert "Traceback" not in err
