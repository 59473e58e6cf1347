"""SPMD compilation (compiler/sharding.py): shardings propagated through the graph ops, collectives
inserted where a sharding changes, one graph per chip, run together by the multi-chip interpreter
(collectives from golden/collectives.py) and compared bit for bit with the unsharded graph on one
chip: the Megatron-style tensor-parallel MLP and the tensor-parallel attention block on 2 and 4
chips, several seeds and shapes, other reshardings, a 2 x 2 grid, the dump, and bad input.

Reproducibility: random tests use ``SEED`` (``SEED=<n>`` in the environment; otherwise a fresh
seed per process) plus a fixed per-test offset, and print it. Rerun a failure with
``SEED=<n> .venv/bin/python -m pytest tests/test_sharding.py``.
"""
import os
import secrets

import numpy as np
import pytest

from compiler import mlir, models
from compiler import sharding as sh
from compiler.errors import CompileError
from compiler.graph import Graph, interpret

SEED = int(os.environ.get("SEED") or secrets.randbelow(2**31))


def rng_for(offset):
    print(f"[sharding] SEED={SEED} (+{offset}) (rerun: SEED={SEED} .venv/bin/python -m pytest "
          f"tests/test_sharding.py)")
    return np.random.default_rng(SEED + offset)


def seeds(offset, count=3):
    rng = rng_for(offset)
    return [int(s) for s in rng.integers(0, 2**31, count)]


def assert_bit_exact(graph, sharded, feeds):
    want = interpret(graph, feeds)
    got = sh.interpret_spmd(sharded, feeds)
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"output {name!r}")
        assert models.degenerate(want[name]) is None, "a degenerate output proves little"
    return want


def ops_of(graph):
    return [n.op for n in graph.nodes]


def node(graph, name):
    return next(n for n in graph.nodes if n.name == name)


def calibrated(rng, x, w, x_zp, codes=30.0):
    """An output scale putting one standard deviation of the real product at ``codes`` codes
    (computed here in float, independently of the compiler)."""
    acc = (x.reshape(-1, w.shape[0]).astype(np.float64) - x_zp) @ w.astype(np.float64)
    return float(np.std(acc)) * 0.05 * 0.01 / codes


def mlp_graph(rng, batch, dims, x_zp, per_channel=False):
    """linear + ReLU layers then a plain linear, with biases and an input zero point ``x_zp``."""
    g = Graph("tp_mlp")
    x = g.input("x", (batch, dims[0]), scale=0.05, zero_point=x_zp)
    feeds = {"x": rng.integers(-128, 128, (batch, dims[0]), dtype=np.int8)}
    h, hv, h_zp, h_scale = x, feeds["x"], x_zp, 0.05
    for i in range(len(dims) - 1):
        last = i == len(dims) - 2
        wd = rng.integers(-128, 128, (dims[i], dims[i + 1]), dtype=np.int8)
        wscale = rng.uniform(0.005, 0.015, dims[i + 1]) if per_channel else 0.01
        w = g.const(f"w{i}", wd, scale=wscale)
        b = g.const(f"b{i}", rng.integers(-4000, 4000, dims[i + 1], dtype=np.int32))
        scale = calibrated(rng, hv, wd, h_zp) * h_scale / 0.05
        zp = 0 if last else -20
        h = g.linear(h, w, b, scale=scale, zero_point=zp, relu=not last, name=f"fc{i}")
        hv = interpret(_upto(g, h), feeds)[h.name]
        h_zp, h_scale = zp, scale
    g.output(h)
    return g, feeds


def _upto(g, t):
    sub = Graph(g.name, list(g.nodes))
    sub.output(t)
    return sub


def tp_grid(n):
    return sh.Grid("tp", (n,))


# ------------------------------------------------------------------------------ tensor-parallel MLP

@pytest.mark.parametrize("chips", [2, 4])
def test_tp_mlp_is_bit_exact_with_one_chip(chips):
    grid = tp_grid(chips)
    shapes = [(8, (64, 128, 64), 7), (5, (32, 64, 48), -13), (16, (128, 256, 32), 0)]
    for k, seed in enumerate(seeds(1 + chips)):
        batch, dims, zp = shapes[k % len(shapes)]
        rng = np.random.default_rng(seed)
        g, feeds = mlp_graph(rng, batch, dims, zp, per_channel=k == 1)
        s = sh.shard(g, grid, sh.tensor_parallel(grid, column=["w0"], row=["w1"]))
        assert_bit_exact(g, s, feeds)
        ops = ops_of(s.chips[0])
        assert ops.count("all_reduce") == 1 and [o for o in ops if o in sh.GRID_OPS] == ["all_reduce"]


@pytest.mark.parametrize("chips", [2, 4])
def test_tp_mlp_from_models_mlp_bit_exact(chips):
    grid = tp_grid(chips)
    for seed in seeds(10 + chips, 2):
        g, feeds = models.mlp(seed=seed, batch=16, dims=(256, 512, 128))
        s = sh.shard(g, grid, sh.tensor_parallel(grid, column=["w0"], row=["w1"]))
        assert_bit_exact(g, s, feeds)


def test_tp_mlp_per_chip_graph_adds_bias_and_zero_point_term_once():
    chips, zp = 4, 9
    rng = rng_for(20)
    g, feeds = mlp_graph(rng, 6, (32, 64, 16), zp)
    grid = tp_grid(chips)
    s = sh.shard(g, grid, sh.tensor_parallel(grid, column=["w0"], row=["w1"]))
    w0, b0 = node(g, "w0").output.data, node(g, "b0").output.data
    w1, b1 = node(g, "w1").output.data, node(g, "b1").output.data
    h = 64 // chips
    correction = np.zeros(16, np.int64)
    for c, cg in enumerate(s.chips):
        assert ops_of(cg) == ops_of(s.chips[0])
        assert [n.output.shape for n in cg.nodes] == [n.output.shape for n in s.chips[0].nodes]
        # each chip holds its slices: w0's columns, b0's entries, w1's rows; b1 whole
        np.testing.assert_array_equal(node(cg, "w0").output.data, w0[:, c * h:(c + 1) * h])
        np.testing.assert_array_equal(node(cg, "b0").output.data, b0[c * h:(c + 1) * h])
        np.testing.assert_array_equal(node(cg, "w1").output.data, w1[c * h:(c + 1) * h])
        mm, ar, rq = node(cg, "fc1.partial"), node(cg, "fc1.all_reduce"), node(cg, "fc1")
        assert mm.op == "matmul" and ar.op == "all_reduce" and rq.op == "requantize"
        assert ar.inputs[0] is mm.output and rq.inputs[0] is ar.output
        assert ar.attrs["group_size"] == chips and mm.output.dtype == "int32"
        np.testing.assert_array_equal(rq.attrs["bias"], b1)     # the bias: after the sum, once
        correction += mm.attrs["bias"].astype(np.int64)        # each chip: its rows' zp term
    h_zp = node(g, "fc0").output.zero_point                  # fc1's input zero point
    assert h_zp != 0
    whole = -h_zp * w1.astype(np.int64).sum(axis=0)
    np.testing.assert_array_equal(correction, whole)           # summed: exactly the whole term once
    assert_bit_exact(g, s, feeds)


def test_unannotated_second_weight_follows_its_input():
    grid = tp_grid(2)
    g, feeds = mlp_graph(rng_for(21), 8, (32, 64, 32), -5)
    explicit = sh.shard(g, grid, sh.tensor_parallel(grid, column=["w0"], row=["w1"]))
    inferred = sh.shard(g, grid, sh.tensor_parallel(grid, column=["w0"]))
    assert explicit.dump(1) == inferred.dump(1)
    assert_bit_exact(g, inferred, feeds)


def test_three_layers_with_a_column_split_last_layer_gathers_the_output():
    grid = tp_grid(4)
    g, feeds = mlp_graph(rng_for(22), 8, (32, 64, 32, 64), 3)
    s = sh.shard(g, grid, sh.tensor_parallel(grid, column=["w0", "w2"], row=["w1"]))
    ops = ops_of(s.chips[0])
    assert [o for o in ops if o in sh.GRID_OPS] == ["all_reduce", "all_gather"]
    assert s.chips[0].outputs[0].producer.op == "all_gather"
    assert_bit_exact(g, s, feeds)


def test_one_chip_grid_is_the_unsharded_graph_under_plain_interpret():
    grid = tp_grid(1)
    g, feeds = mlp_graph(rng_for(23), 4, (16, 32, 16), 2)
    s = sh.shard(g, grid, sh.tensor_parallel(grid, column=["w0"], row=["w1"]))
    want = interpret(g, feeds)
    got = interpret(s.chips[0], s.chip_feeds(0, feeds))
    np.testing.assert_array_equal(got[s.outputs["fc1"]], want["fc1"])


# ------------------------------------------------------------------------------ tensor-parallel attention

ATTENTION = ["q.w", "k.w", "v.w"]


@pytest.mark.parametrize("chips", [2, 4])
def test_tp_attention_is_bit_exact_with_one_chip(chips):
    grid = tp_grid(chips)
    shapes = [dict(d_model=32, seq=16, heads=4), dict(d_model=64, seq=24, heads=8, causal=True),
              dict(d_model=32, seq=8, heads=4, batch=2)]
    for k, seed in enumerate(seeds(30 + chips)):
        g, feeds = models.attention_block(seed=seed, **shapes[k])
        s = sh.shard(g, grid, sh.tensor_parallel(grid, column=ATTENTION, row=["o.w"]))
        assert_bit_exact(g, s, feeds)
        cg = s.chips[0]
        assert [o for o in ops_of(cg) if o in sh.GRID_OPS] == ["all_reduce"]
        assert node(cg, "attn").attrs["heads"] == shapes[k]["heads"] // chips
        assert node(cg, "attn").output.shape[-1] == shapes[k]["d_model"] // chips
        assert node(cg, "o.all_reduce").inputs[0].producer.op == "matmul"
        assert node(cg, "residual").inputs[1] is node(cg, "o").output


def test_heads_that_do_not_split_evenly_are_rejected_naming_heads():
    g, _ = models.attention_block(seed=1, d_model=32, seq=8, heads=2)
    grid = tp_grid(4)
    with pytest.raises(CompileError, match=r"attention 'attn'.*heads=2 do not split evenly over "
                                           r"the 4 parts"):
        sh.shard(g, grid, sh.tensor_parallel(grid, column=ATTENTION, row=["o.w"]))


# ------------------------------------------------------------------------------ other reshardings

def test_partial_to_row_split_is_a_reduce_scatter_and_replicated_to_split_an_all_slice():
    rng = rng_for(40)
    g = Graph("rs")
    x = g.input("x", (8, 32), scale=0.05, zero_point=-3)
    feeds = {"x": rng.integers(-128, 128, (8, 32), dtype=np.int8)}
    w = g.const("w", rng.integers(-128, 128, (32, 16), dtype=np.int8), scale=0.01)
    mm = g.matmul(x, w, name="mm")
    y = g.requantize(mm, scale=calibrated(rng, feeds["x"], w.data, -3), zero_point=0, name="y")
    r = g.relu(y, name="r")
    g.output(r)
    grid = tp_grid(4)
    notes = {"x": sh.Sharding(grid, ((), (0,))), "mm": sh.Sharding(grid, ((0,), ()))}
    s = sh.shard(g, grid, notes)
    assert [o for o in ops_of(s.chips[0]) if o in sh.GRID_OPS] == ["reduce_scatter", "all_gather"]
    assert node(s.chips[0], "y").output.shape == (2, 16)
    assert_bit_exact(g, s, feeds)
    # a replicated input constrained to row parts: sliced locally, gathered for the output
    s2 = sh.shard(g, grid, {"r": sh.Sharding(grid, ((0,),))})
    assert [o for o in ops_of(s2.chips[0]) if o in sh.GRID_OPS] == ["all_slice", "all_gather"]
    assert_bit_exact(g, s2, feeds)


def test_norm_on_column_split_input_gathers_first():
    rng = rng_for(41)
    g = Graph("norm")
    x = g.input("x", (6, 32), scale=0.05)
    feeds = {"x": rng.integers(-128, 128, (6, 32), dtype=np.int8)}
    h = g.rms_norm(x, rng.uniform(0.5, 1.5, 32), scale=0.03, name="n")
    h2 = g.layer_norm(x, rng.uniform(0.5, 1.5, 32), rng.normal(0, 0.2, 32), scale=0.03, name="n2")
    g.output(g.add(g.gelu(h, scale=0.03, name="act"), h2, name="sum"))
    grid = tp_grid(2)
    s = sh.shard(g, grid, {"x": sh.Sharding(grid, ((), (0,)))})
    # both norms need x's channels whole: one all_gather serves them
    assert [o for o in ops_of(s.chips[0]) if o in sh.GRID_OPS] == ["all_gather"]
    assert_bit_exact(g, s, feeds)


def test_two_by_two_grid_data_and_tensor_parallel():
    grid = sh.Grid("dp_tp", (2, 2))
    g, feeds = mlp_graph(rng_for(42), 8, (32, 64, 32), 4)
    notes = sh.tensor_parallel(grid, column=["w0"], row=["w1"], axis=1)
    notes["x"] = sh.Sharding(grid, ((0,),))                   # batch rows over grid axis 0
    s = sh.shard(g, grid, notes)
    ar = node(s.chips[0], "fc1.all_reduce")
    assert ar.attrs["grid_axes"] == (1,) and ar.attrs["group_size"] == 2
    assert node(s.chips[0], "x").output.shape == (4, 32)
    assert_bit_exact(g, s, feeds)
    att, att_feeds = models.attention_block(seed=int(rng_for(43).integers(2**31)), d_model=32,
                                            seq=8, heads=4, batch=2)
    notes = sh.tensor_parallel(grid, column=ATTENTION, row=["o.w"], axis=1)
    notes["x"] = sh.Sharding(grid, ((0,),))
    assert_bit_exact(att, sh.shard(att, grid, notes), att_feeds)


def test_groups_and_positions_follow_the_row_major_chip_index():
    grid = sh.Grid("g", (2, 3))
    assert grid.groups((1,)) == [[0, 1, 2], [3, 4, 5]]
    assert grid.groups((0,)) == [[0, 3], [1, 4], [2, 5]]
    assert grid.groups((1, 0)) == [[0, 3, 1, 4, 2, 5]]       # order: outer axis first (1, then 0)
    assert [grid.position(c, (0, 1)) for c in range(6)] == list(range(6))
    a = np.arange(24).reshape(4, 6)
    s = sh.Sharding(grid, ((0,), (1,)))
    np.testing.assert_array_equal(sh.local_part(a, s, 5), a[2:4, 4:6])


# ------------------------------------------------------------------------------ the dump

def test_dump_uses_the_shard_dialect_and_parses():
    grid = tp_grid(2)
    g, _ = mlp_graph(rng_for(50), 4, (16, 32, 16), 5)
    s = sh.shard(g, grid, sh.tensor_parallel(grid, column=["w0"], row=["w1"]))
    text = s.dump(0)
    name, ops = mlir.parse(text)
    assert name == "tp_mlp.tp.chip0"
    names = [op for _, op, _, _, _ in ops]
    assert names[0] == "shard.grid" and names.count("shard.all_reduce") == 1
    assert names.count("shard.shard") == len(s.chips[0].nodes)
    assert '"shard.grid"() {sym_name = "tp", shape = array<i64: 2>}' in text
    defs = {res[0]: attrs for res, op, _, attrs, _ in ops if op == "shard.sharding"}
    annotated = {args[0]: defs[args[1]] for _, op, args, _, _ in ops if op == "shard.shard"}
    assert "split_axes = #shard.axisarray<[[], [0]]>" in annotated["%w0"]
    assert "split_axes = #shard.axisarray<[[0], []]>" in annotated["%w1"]
    assert "partial_axes = array<i16: 0>, partial_type = #shard.partial<sum>" in annotated["%fc1.partial"]
    assert "partial_axes" not in annotated["%fc1.all_reduce"]
    ar = next(a for _, op, _, a, _ in ops if op == "shard.all_reduce")
    assert ar == "grid = @tp, grid_axes = array<i16: 0>, reduction = #shard.partial<sum>"
    # consumers take the annotated values
    used = [a for _, op, args, _, _ in ops if op.startswith("kaki.") for a in args]
    assert used and all(a.endswith(".sh") for a in used)


# ------------------------------------------------------------------------------ bad input

def test_uneven_splits_are_rejected_naming_the_dimension():
    grid = tp_grid(4)
    g, _ = mlp_graph(rng_for(60), 4, (16, 10, 16), 0)
    with pytest.raises(CompileError, match=r"const 'w0'.*dimension 1 of size 10 does not split "
                                           r"evenly over grid axes \[0\] of 'tp' \(4 parts\)"):
        sh.shard(g, grid, sh.tensor_parallel(grid, column=["w0"]))
    g2, _ = mlp_graph(rng_for(61), 6, (16, 32, 16), 0)
    with pytest.raises(CompileError, match=r"input 'x'.*dimension 0 of size 6"):
        sh.shard(g2, grid, {"x": sh.Sharding(grid, ((0,),))})


def test_bad_annotations_and_shardings():
    grid = tp_grid(2)
    g, _ = mlp_graph(rng_for(62), 4, (16, 32, 16), 0)
    with pytest.raises(CompileError, match="annotation for unknown tensor 'w9'"):
        sh.shard(g, grid, {"w9": sh.Sharding(grid, ((0,),))})
    with pytest.raises(CompileError, match="not a Sharding on grid 'tp'"):
        sh.shard(g, grid, {"w0": sh.Sharding(sh.Grid("other", (2,)), ((0,),))})
    with pytest.raises(CompileError, match=r"weight 'w0' is split on both K \[0\] and N \[1\]"):
        g2 = sh.Grid("tp", (2, 2))
        sh.shard(g, g2, {"w0": sh.Sharding(g2, ((0,), (1,)))})
    with pytest.raises(CompileError, match=r"linear 'fc0': input rows split along \[\(0,\)\] clash "
                                           r"with the weight's split"):
        sh.shard(g, grid, {"x": sh.Sharding(grid, ((0,),)), "w0": sh.Sharding(grid, ((), (0,)))})
    with pytest.raises(CompileError, match="grid axis out of range"):
        sh.Sharding(grid, ((1,),))
    with pytest.raises(CompileError, match="a grid axis is used twice"):
        sh.Sharding(grid, ((0,), (0,)))
    with pytest.raises(CompileError, match="only an int32 result can be partial"):
        sh.shard(g, grid, {"x": sh.Sharding(grid, ((),), partial_axes=(0,))})
    with pytest.raises(CompileError, match="split_axes .* more than the tensor's 1 dimensions"):
        sh.shard(g, grid, {"b0": sh.Sharding(grid, ((), (0,)))})
    with pytest.raises(CompileError, match="shape 0 must be positive"):
        sh.Grid("tp", 0)


def test_plain_interpret_of_one_chips_part_points_to_the_spmd_interpreter():
    grid = tp_grid(2)
    g, feeds = mlp_graph(rng_for(63), 4, (16, 32, 16), 0)
    s = sh.shard(g, grid, sh.tensor_parallel(grid, column=["w0"], row=["w1"]))
    with pytest.raises(CompileError, match=r"all_reduce 'fc1.all_reduce'.*over 2 chips.*"
                                           r"interpret_spmd"):
        interpret(s.chips[0], s.chip_feeds(0, feeds))


def test_chips_running_different_programs_are_reported():
    grid = tp_grid(2)
    g, feeds = mlp_graph(rng_for(64), 4, (16, 32, 16), 0)
    tp = sh.shard(g, grid, sh.tensor_parallel(grid, column=["w0"], row=["w1"]))
    plain = sh.shard(g, grid, {})                               # no collective at all
    tp.chips[1] = plain.chips[1]
    with pytest.raises(CompileError, match="the chips diverged"):
        sh.interpret_spmd(tp, feeds)


def test_collective_and_requantize_bias_nodes_check_their_operands():
    g = Graph("bad")
    x8 = g.input("x", (4, 6), scale=0.1)
    x32 = g.input("acc", (4, 6), dtype="int32", scale=0.001)
    kw = dict(grid="tp", grid_shape=(4,), grid_axes=(0,))
    with pytest.raises(CompileError, match="all_reduce .*input 'x' has dtype int8, expected int32"):
        g.collective("all_reduce", x8, **kw)
    with pytest.raises(CompileError, match="dimension 1 of size 6 does not split into 4 equal"):
        g.collective("all_slice", x8, axis=1, **kw)
    with pytest.raises(CompileError, match=r"grid_axes \(1,\) must be distinct axes"):
        g.collective("all_gather", x8, axis=0, grid="tp", grid_shape=(4,), grid_axes=(1,))
    assert g.collective("all_gather", x8, axis=1, **kw).shape == (4, 24)
    w = g.const("w", np.ones((6, 6), np.int8), scale=0.01)
    b = g.const("b", np.arange(6, dtype=np.int32))
    with pytest.raises(CompileError, match="not a matmul result"):
        g.requantize(g.matmul(x8, w), scale=0.1, bias=b)
    with pytest.raises(CompileError, match="not a matmul result"):
        g.requantize(x8, scale=0.1, bias=b)
    with pytest.raises(CompileError, match=r"bias must be a constant int32 \[6\]"):
        g.requantize(x32, scale=0.1, bias=g.const("b2", np.arange(4, dtype=np.int32)))
    y = g.requantize(x32, scale=0.1, bias=b, name="y")
    g.output(y)
    acc = np.arange(24, dtype=np.int32).reshape(4, 6) * 37
    out = interpret(Graph("one", [n for n in g.nodes if n.name in ("acc", "b", "y")], [y]),
                    {"acc": acc})["y"]
    # real = 0.001 * (acc + b), quantized at 0.1: round half up of (acc + b) / 100
    np.testing.assert_array_equal(out, np.floor((acc + np.arange(6)) / 100 + 0.5).astype(np.int8))
