"""`%load_ext workbench` and the `%workbench` line magic, in a real IPython shell."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import workbench as wb
from workbench.widgets.explorer import Explorer
from workbench.widgets.magics import parse

WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "workbench")
    return sh


def test_parse_reads_every_option() -> None:
    kw = parse("model.onnx --backends x86,arm --level 1 --precision fp64 --repeat 3 --dims batch=2")
    assert kw == {
        "model": "model.onnx",
        "backends": ["x86", "arm"],
        "level": 1,
        "precision": "fp64",
        "repeat": 3,
        "dims": {"batch": 2},
        "save": True,
    }
    kw = parse("'my model.onnx' --no-save")
    assert kw["model"] == "my model.onnx" and kw["backends"] is None and kw["level"] == 2
    assert kw["save"] is False


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("", "needs a model"),
        ("tiny_bert --level 5", "invalid choice: 5"),
        ("tiny_bert --frobnicate", "unrecognized arguments: --frobnicate"),
        ("tiny_bert --dims batch", "name=int"),
        ("tiny_bert --repeat 0", "at least 1"),
    ],
)
def test_parse_errors_say_what_is_wrong(line: str, why: str) -> None:
    with pytest.raises(wb.WorkbenchError, match=why):
        parse(line)


def test_load_ext_registers_the_magic(shell: InteractiveShell) -> None:
    assert "workbench" in shell.magics_manager.magics["line"]


def test_magic_opens_an_explorer(shell: InteractiveShell) -> None:
    with capture_output() as out:
        ex = shell.run_line_magic("workbench", "tiny_bert --backends x86 --level 1 --no-save")
    assert isinstance(ex, Explorer)
    assert ex.backends == ["x86"] and ex.level == 1 and ex.precision == "fp32"
    assert ex.model.name == wb.load(wb.zoo.get("tiny_bert")).name
    assert ex.error == ""
    # displayed once, as a widget
    assert sum(WIDGET in o.data for o in out.outputs) == 1


def test_magic_as_a_cell_result_is_not_shown_twice(shell: InteractiveShell) -> None:
    with capture_output() as out:
        result = shell.run_cell("%workbench tiny_bert --backends x86 --level 0 --no-save")
    assert result.success, result.error_in_exec
    assert isinstance(result.result, Explorer)
    assert sum(WIDGET in o.data for o in out.outputs) == 1  # the magic's display only
    assert "<workbench Explorer" in out.stdout  # the cell's result, as one line of text
    # in a later cell the Explorer displays as the dashboard again
    assert result.result._repr_as_text is False
    assert WIDGET in result.result._repr_mimebundle_()


def test_magic_errors_are_usage_errors(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="neither a file nor a zoo model"):
        shell.run_line_magic("workbench", "no_such_model")
    with pytest.raises(UsageError, match="unknown backend 'nope'"):
        shell.run_line_magic("workbench", "tiny_bert --backends nope")


def test_magic_refuses_an_unknown_precision(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="no backend has precision 'fp7'"):
        shell.run_line_magic("workbench", "tiny_bert --precision fp7")


def test_models_profiles_and_comparisons_show_html_in_notebooks(shell: InteractiveShell) -> None:
    from workbench import zoo

    shell.run_line_magic("load_ext", "workbench")
    html = shell.display_formatter.formatters["text/html"]
    html.enabled = True  # a terminal shell turns HTML off; a notebook kernel has it on
    model = wb.load(zoo.get("tiny_resnet"))
    assert "tiny_resnet" in html(model) and "41 nodes" in html(model)
    prof = wb.profile(model, backend="x86", repeat=2, warmup=0, save=False, progress=False)
    assert "x86" in html(prof) and "<" in html(prof)
    cmp = wb.compare(model, backends=["x86"], save=False, progress=False)
    assert "x86" in html(cmp)
