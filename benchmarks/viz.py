"""Time to build the graph figure, layout included, with every cache cold.

    python benchmarks/viz.py [--repeat 3] [--blocks 2000]

Two graphs: bert (the zoo's, 777 nodes at level 0) and a generated chain of residual
blocks (`--blocks` x 5 nodes: 10,000 by default) built with onnx.helper. Each is drawn
as `wb.viz.graph` draws it by default (repeated blocks collapsed) and in full
(`collapse=False`, every node its own marker). Before every run the layout cache and the
weight-statistics cache are cleared, so each run pays for the layout (dot, or igraph's
Sugiyama above `DOT_MAX_NODES`) and for the hover text. Prints the medians of `--repeat`
runs per case, wall and CPU seconds. Targets (issue 5): at most 1 s for bert, 3 s for 10,000 nodes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def residual_chain(blocks: int, width: int = 16) -> onnx.ModelProto:
    """`blocks` x [MatMul, Add(bias), Relu, MatMul, Add(residual)], exporter-style names."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "input"
    for b in range(blocks):
        p = f"/blocks/block.{b}"
        w1, bias, w2 = f"blocks.{b}.fc1.weight", f"blocks.{b}.fc1.bias", f"blocks.{b}.fc2.weight"
        inits += [
            numpy_helper.from_array(rng.standard_normal((width, width), np.float32) * 0.1, w1),
            numpy_helper.from_array(np.zeros(width, np.float32), bias),
            numpy_helper.from_array(rng.standard_normal((width, width), np.float32) * 0.1, w2),
        ]
        nodes += [
            helper.make_node(
                "MatMul", [x, w1], [f"{p}/fc1/MatMul_output_0"], name=f"{p}/fc1/MatMul"
            ),
            helper.make_node(
                "Add",
                [f"{p}/fc1/MatMul_output_0", bias],
                [f"{p}/fc1/Add_output_0"],
                name=f"{p}/fc1/Add",
            ),
            helper.make_node(
                "Relu", [f"{p}/fc1/Add_output_0"], [f"{p}/Relu_output_0"], name=f"{p}/Relu"
            ),
            helper.make_node(
                "MatMul",
                [f"{p}/Relu_output_0", w2],
                [f"{p}/fc2/MatMul_output_0"],
                name=f"{p}/fc2/MatMul",
            ),
            helper.make_node(
                "Add", [f"{p}/fc2/MatMul_output_0", x], [f"{p}/Add_output_0"], name=f"{p}/Add"
            ),
        ]
        x = f"{p}/Add_output_0"
    nodes.append(helper.make_node("Identity", [x], ["output"], name="/out/Identity"))
    graph = helper.make_graph(
        nodes,
        "residual_chain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", width])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def time_graph(model, repeat: int, **kwargs) -> tuple[float, dict]:
    """Median wall seconds of `graph(model, **kwargs)` and the last figure's meta, with the
    median CPU seconds of the process under "cpu" (the layout runs in-process, on one
    core: on a loaded machine CPU time is what an idle one would take)."""
    from workbench.viz import _graph_data, _layout, graph

    times, cpu, meta = [], [], {}
    for _ in range(repeat):
        _layout.clear_cache()
        _graph_data._STATS.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        fig = graph(model, **kwargs)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        meta = dict(fig.layout.meta)
        meta["drawn"] = len(fig.data[meta["node_trace"]].x)
    meta["cpu"] = statistics.median(cpu)
    return statistics.median(times), meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=2000)
    args = ap.parse_args()

    import workbench as wb
    from workbench import zoo
    from workbench.viz import graph

    graph(wb.load(zoo.get("tiny_bert")))  # imports and first-call costs out of the timings
    cases = [
        ("bert", wb.load(zoo.get("bert")), 1.0),
        (f"residual chain x{args.blocks}", wb.load(residual_chain(args.blocks)), 3.0),
    ]
    print(
        f"{'graph':<24} {'nodes':>6} {'mode':<8} {'drawn':>6} {'layout':<9} "
        f"{'wall s':>7} {'cpu s':>7}"
    )
    for name, model, target in cases:
        n = len(model.graph.nodes)
        for mode, kw in (("default", {}), ("full", {"collapse": False})):
            sec, meta = time_graph(model, args.repeat, **kw)
            flag = "ok" if sec <= target else f"over the {target:g} s target"
            print(
                f"{name:<24} {n:>6} {mode:<8} {meta['drawn']:>6} {meta['layout']:<9} "
                f"{sec:>7.3f} {meta['cpu']:>7.3f}  {flag}"
            )


if __name__ == "__main__":
    main()
