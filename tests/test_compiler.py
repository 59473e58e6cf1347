"""The compiler: graph API and interpreter, IR levels (verifiers, dumps), passes, cost model, and
compiled programs executed on the golden device model under the queue/event semantics.

Reproducibility: random tests use ``SEED`` (``SEED=<n>`` in the environment, as ``make test
SEED=<n>`` exports it; otherwise a fresh seed per process) plus a fixed per-test offset, and print
it. Rerun a failure with ``SEED=<n> .venv/bin/python -m pytest tests/test_compiler.py``.
"""
import dataclasses
import os
import re
import secrets

import numpy as np
import pytest

from compiler import cost, mlir
from compiler.compile import compile_graph
from compiler.cost import (CPL_WRITE, DISPATCH, DMA_SETUP, EVENT_ISSUE, RETIRE_LAT, START_LAT, command_cycles,
                           gemm_banks_shared, gemm_cycles, gemm_stream_cycles, simulate)
from compiler.errors import CompileError
from compiler.graph import Graph, interpret
from compiler.ir import CommandIR
from compiler.passes import COMPUTE_QS, EV_COMPUTED, EV_EPILOGUE, EV_STORED, LOAD_Q, STORE_Q, fuse
from compiler.refexec import Hazard, execute
from spec.capabilities import Capabilities
from spec.descriptors import Opcode
from driver.program import ProgramCommand, Reloc
from hdl_gen.config import KakiConfig

SEED = int(os.environ.get("SEED") or secrets.randbelow(2**31))


def rng_for(offset):
    print(f"[compiler] SEED={SEED} (+{offset}) (rerun: SEED={SEED} .venv/bin/python -m pytest "
          f"tests/test_compiler.py)")
    return np.random.default_rng(SEED + offset)


def caps_for(dim, **kw):
    return Capabilities.from_config(KakiConfig(dim=dim, **kw))


#: a small chip: forces M tiling, K chunks (accumulate) and N groups
TINY = dict(spad_bank_rows=64, acc_bank_rows=256)


def run(cm, feeds, seed=0, check=True):
    model, addrs = execute(cm.program, cm.caps, cm.pack_inputs(feeds), seed=seed, check=check)
    return cm.unpack_outputs(lambda name, nb: model.host[addrs[name]:addrs[name] + nb].tobytes())


def assert_matches(cm, feeds, seeds=(0,)):
    ref = interpret(cm.graph, feeds)
    for s in seeds:
        got = run(cm, feeds, seed=s)
        for k in ref:
            wrong = np.argwhere(got[k] != ref[k])
            assert wrong.size == 0, (f"{k}: {len(wrong)} wrong outputs (interleaving seed {s}), first at "
                                     f"{tuple(wrong[0])}: got {got[k][tuple(wrong[0])]}, "
                                     f"expected {ref[k][tuple(wrong[0])]}")
    return ref


def out_scale(x_scale, w_scale, k):
    """An output scale that keeps typical results inside int8 (random data, K terms)."""
    return x_scale * w_scale * 128 * 128 * np.sqrt(k) / 300


def mlp(rng, batch=8, dims=(64, 128, 128, 10)):
    g = Graph("mlp")
    x = g.input("x", (batch, dims[0]), scale=0.05, zero_point=int(rng.integers(-8, 8)))
    h = x
    for i in range(len(dims) - 1):
        w = g.const(f"w{i}", rng.integers(-128, 128, (dims[i], dims[i + 1]), dtype=np.int8), scale=0.01)
        b = g.const(f"b{i}", rng.integers(-5000, 5000, dims[i + 1], dtype=np.int32))
        last = i == len(dims) - 2
        h = g.linear(h, w, b, scale=out_scale(float(h.scale), 0.01, dims[i]),
                     zero_point=0 if last else int(rng.integers(-20, 0)), relu=not last, name=f"fc{i}")
    g.output(h)
    return g, {"x": rng.integers(-128, 128, (batch, dims[0]), dtype=np.int8)}


def conv_net(rng, n=1, hw=8, c=3, oc=16, k=3, stride=1, padding=1):
    g = Graph("conv")
    x = g.input("img", (n, hw, hw, c), scale=0.02, zero_point=int(rng.integers(-10, 10)))
    w = g.const("cw", rng.integers(-128, 128, (k, k, c, oc), dtype=np.int8), scale=0.01)
    b = g.const("cb", rng.integers(-3000, 3000, oc, dtype=np.int32))
    y = g.conv2d(x, w, b, scale=out_scale(0.02, 0.01, k * k * c), zero_point=-3, stride=stride,
                 padding=padding, relu=True, name="conv")
    g.output(y)
    return g, {"img": rng.integers(-128, 128, (n, hw, hw, c), dtype=np.int8)}


# ------------------------------------------------------------------------- end to end, bit exact

@pytest.mark.parametrize("dim", [4, 8, 16])
def test_mlp_bit_exact(dim):
    g, feeds = mlp(rng_for(dim))
    cm = compile_graph(g, caps_for(dim))
    ref = assert_matches(cm, feeds, seeds=(0, 1, 2))
    assert ref["fc2"].shape == (8, 10)
    assert len(cm.fused) == 3 and len(cm.cycles) == len(cm.program.commands)
    roles = {n: b.role for n, b in cm.program.buffers.items()}
    assert roles["x"] == "input" and roles["fc2"] == "output" and roles["fc0"] == "scratch"
    assert roles["w0"] == "const" and cm.program.buffers["w0"].init is not None


@pytest.mark.parametrize("dim", [4, 8, 16])
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0)])
def test_conv_bit_exact(dim, stride, padding):
    g, feeds = conv_net(rng_for(100 + dim), stride=stride, padding=padding)
    cm = compile_graph(g, caps_for(dim))
    ref = assert_matches(cm, feeds, seeds=(0, 1))
    assert ref["conv"].shape[0] == 1 and ref["conv"].shape[-1] == 16
    assert any(name.startswith("img.im2col") for name in cm.program.buffers)


@pytest.mark.parametrize("dim", [4, 8])
def test_tiny_chip_tiles_m_n_and_k(dim):
    """A scratchpad of 4 x 64 rows: every GEMM needs several M tiles, N groups and K chunks."""
    g, feeds = mlp(rng_for(200 + dim), batch=40, dims=(72, 100, 36))
    cm = compile_graph(g, caps_for(dim, **TINY))
    assert_matches(cm, feeds, seeds=(0, 1, 2))
    for tg in cm.tiled.gemms:
        assert len(tg.tiles) > 1
    steps = [s for tg in cm.tiled.gemms for t in tg.tiles for s in t.steps]
    assert any(not s.first for s in steps), "no K chunking (accumulate) was exercised"
    gemms = [c for c in cm.program.commands if c.opcode == Opcode.GEMM]
    assert any(c.fields["accumulate"] for c in gemms)


@pytest.mark.parametrize("dim", [4, 8])
def test_random_networks_on_a_tiny_chip(dim):
    """Random layer widths, batch and residual/ReLU structure; several interleavings each."""
    rng = rng_for(250 + dim)
    for case in range(3):
        dims = tuple(int(d) for d in rng.choice([5, 16, 24, 40, 67], int(rng.integers(2, 5))))
        batch = int(rng.integers(1, 50))
        g = Graph(f"rand{case}")
        x = g.input("x", (batch, dims[0]), scale=0.05, zero_point=int(rng.integers(-9, 9)))
        h = x
        for i in range(len(dims) - 1):
            w = g.const(f"w{i}", rng.integers(-128, 128, (dims[i], dims[i + 1]), dtype=np.int8),
                        scale=0.01)
            b = g.const(f"b{i}", rng.integers(-5000, 5000, dims[i + 1], dtype=np.int32)) if rng.random() < 0.7 else None
            y = g.linear(h, w, b, scale=out_scale(float(h.scale), 0.01, dims[i]),
                         zero_point=int(rng.integers(-20, 20)), relu=bool(rng.random() < 0.5),
                         name=f"fc{i}")
            if dims[i] == dims[i + 1] and rng.random() < 0.7:
                y = g.add(y, g.requantize(h, scale=float(y.scale), zero_point=0, name=f"rq{i}"),
                          name=f"skip{i}")
            h = y
        g.output(h)
        feeds = {"x": rng.integers(-128, 128, (batch, dims[0]), dtype=np.int8)}
        cm = compile_graph(g, caps_for(dim, **TINY))
        print(f"case {case}: batch {batch}, dims {dims}: {len(cm.program.commands)} commands")
        assert_matches(cm, feeds, seeds=(case, case + 10))


@pytest.mark.parametrize("dim", [4, 8])
def test_conv_on_a_tiny_chip(dim):
    g, feeds = conv_net(rng_for(150 + dim), n=2, hw=7, c=5, oc=12, stride=2, padding=1)
    cm = compile_graph(g, caps_for(dim, **TINY))
    assert_matches(cm, feeds, seeds=(0, 1))


def test_residual_block_fuses_and_matches():
    rng = rng_for(300)
    g = Graph("res")
    x = g.input("x", (24, 32), scale=0.05, zero_point=0)
    w1 = g.const("w1", rng.integers(-128, 128, (32, 32), dtype=np.int8), scale=0.01)
    w2 = g.const("w2", rng.integers(-128, 128, (32, 32), dtype=np.int8), scale=0.01)
    h = g.linear(x, w1, None, scale=0.05, zero_point=0, name="fc1")
    h = g.relu(h, name="r1")                                  # fused into fc1
    acc = g.matmul(h, w2, name="mm")
    y = g.requantize(acc, scale=0.05, zero_point=0, name="rq")  # fused into mm
    y = g.add(y, x, name="skip")                              # fused: residual add of x
    y = g.relu(y, name="r2")                                  # after an add: identity GEMM
    g.output(y)
    cm = compile_graph(g, caps_for(8, **TINY))
    assert [f.nodes[0].name for f in cm.fused] == ["fc1", "mm", "r2"]
    assert cm.fused[0].relu and [n.name for n in cm.fused[1].nodes] == ["mm", "rq", "skip"]
    assert cm.fused[1].residual is x
    assert_matches(cm, {"x": rng.integers(-128, 128, (24, 32), dtype=np.int8)}, seeds=(0, 1))
    vec = [c for c in cm.program.commands if c.opcode == Opcode.VECTOR]
    assert any(c.fields["ops.add"] for c in vec) and any(c.fields["ops.relu"] for c in vec)


def test_standalone_ops_run_as_identity_gemms():
    rng = rng_for(400)
    g = Graph("ops")
    a = g.input("a", (5, 20), scale=0.1, zero_point=4)
    b = g.input("b", (5, 20), scale=0.1, zero_point=-2)
    s = g.add(a, b, name="sum")
    r = g.relu(a, name="relu_a")
    q = g.requantize(s, scale=0.3, zero_point=7, name="rq")
    g.output(s, r, q)
    cm = compile_graph(g, caps_for(4))
    assert len(cm.fused) == 3 and all(f.w.name.endswith(".eye") for f in cm.fused)
    feeds = {k: rng.integers(-128, 128, (5, 20), dtype=np.int8) for k in "ab"}
    ref = assert_matches(cm, feeds, seeds=(0, 1))
    assert ref["relu_a"].min() >= 4


def test_interpreter_uses_golden_numerics():
    rng = rng_for(500)
    g, feeds = mlp(rng, dims=(16, 8))
    n = g.nodes[-1]
    from golden import ops
    x = feeds["x"]
    expect = ops.vector_epilogue(ops.gemm(x, g.nodes[1].output.data), bias=n.attrs["bias"],
                                 mult=n.attrs["mult"], shift=n.attrs["shift"],
                                 zero_point=n.attrs["zero_point"], relu=False)
    np.testing.assert_array_equal(interpret(g, feeds)["fc0"], expect)
    # the input zero point is folded into the bias: bias_eff = bias - zp * colsum(W)
    w = g.nodes[1].output.data.astype(np.int64)
    zp = g.nodes[0].output.zero_point
    np.testing.assert_array_equal(n.attrs["bias"], g.nodes[2].output.data - zp * w.sum(axis=0))


# ------------------------------------------------------------------------- events and scheduling

def _drop(cm, pred):
    """A copy of the program without the first command matching ``pred``."""
    import copy
    p = copy.deepcopy(cm.program)
    i = next(i for i, c in enumerate(p.commands) if pred(c))
    del p.commands[i]
    return p


def test_queues_and_events_order_loads_before_compute():
    g, feeds = mlp(rng_for(600), batch=40, dims=(72, 100, 36))
    # both compute queues (the cost model may prefer one for this model): their events are checked
    cm = compile_graph(g, caps_for(4, **TINY), compute_queues=2)
    on = {op: {c.queue for c in cm.program.commands if c.opcode == op} for op in Opcode}
    assert on[Opcode.DMA_LOAD] == {LOAD_Q} and on[Opcode.DMA_STORE] == {STORE_Q}
    assert on[Opcode.GEMM] == set(COMPUTE_QS) and on[Opcode.VECTOR] <= set(COMPUTE_QS)
    assert not any(c.opcode == Opcode.BARRIER for c in cm.program.commands)
    inputs = cm.pack_inputs(feeds)
    for s in range(4):
        execute(cm.program, cm.caps, inputs, seed=s)         # no hazard in any interleaving
    # without the wait for the loads, a GEMM may read a buffer the DMA is still filling
    bad = _drop(cm, lambda c: c.queue in COMPUTE_QS and c.opcode == Opcode.WAIT_EVENT
                and c.fields["value"] > 1)
    with pytest.raises(Hazard, match="not ordered"):
        execute(bad, cm.caps, inputs, seed=0)
    # without its waits for the other compute queue, an epilogue may read C before that
    # queue's GEMM of the tile wrote it, or a tile's first GEMM overwrite C while tile t - 2's
    # epilogue still reads it (in the interleavings where the other queue runs late)
    g2, feeds2 = mlp(rng_for(602), batch=40, dims=(40, 24))
    cm2 = compile_graph(g2, caps_for(4, **TINY), compute_queues=2)
    bad = _drop(cm2, lambda c: c.queue in COMPUTE_QS and c.opcode == Opcode.WAIT_EVENT
                and c.fields["event"] in EV_COMPUTED)
    with pytest.raises(Hazard):
        for s in range(20):
            execute(bad, cm2.caps, cm2.pack_inputs(feeds2), seed=s)
    # without the wait for the store, the epilogue may overwrite an output buffer being stored
    bad = _drop(cm, lambda c: c.queue in COMPUTE_QS and c.opcode == Opcode.WAIT_EVENT
                and c.fields["event"] == EV_STORED)
    with pytest.raises(Hazard):
        execute(bad, cm.caps, inputs, seed=0)
    # without the wait for the previous layer's stores, a load may read its output too early
    # (one tile per layer, so nothing else orders them)
    g1, feeds1 = mlp(rng_for(601))
    cm1 = compile_graph(g1, caps_for(8), forward=False, compute_queues=2)
    assert all(len(tg.tiles) == 1 for tg in cm1.tiled.gemms)
    bad = _drop(cm1, lambda c: c.queue == LOAD_Q and c.opcode == Opcode.WAIT_EVENT
                and c.fields["event"] == EV_STORED)
    with pytest.raises(Hazard, match="host|location"):
        for s in range(40):
            execute(bad, cm1.caps, cm1.pack_inputs(feeds1), seed=s)
    # the loads' wait for the compute (buffer reuse two steps later)
    bad = _drop(cm, lambda c: c.queue == LOAD_Q and c.opcode == Opcode.WAIT_EVENT
                and c.fields["event"] in EV_COMPUTED)
    with pytest.raises(Hazard):
        execute(bad, cm.caps, inputs, seed=0)


def test_steps_alternate_between_two_compute_queues():
    """With four queues, a GEMM step goes to the other compute queue than the step before it:
    while one queue's SIGNAL waits for its GEMM to retire, the other queue's GEMM is already in
    the engine. Except a tile's second step: it follows the first on its queue, so the first
    reaches the engine before every other step of the tile (queue order; later steps load into
    buffers freed by a step after it) and overwrites C, no C-initialising DMA. A chip with three
    queues (or one accumulator bank) gets one compute queue."""
    g, feeds = mlp(rng_for(610), batch=40, dims=(72, 100, 36))
    caps = caps_for(4, **TINY)
    cm = compile_graph(g, caps, compute_queues=2, bias_in_c=False)
    assert cm.tiled.compute_queues == 2 and cm.program.events == 6
    gemms = [c for c in cm.program.commands if c.opcode == Opcode.GEMM]
    steps = [(t, s) for tg in cm.tiled.gemms for t in tg.tiles for s in t.steps]
    assert len(gemms) == len(steps) and any(len(t.steps) > 2 for t, _ in steps)
    for i, ((t, s), c) in enumerate(zip(steps, gemms)):
        second = len(t.steps) > 1 and s is t.steps[1]
        if i:
            assert (c.queue == gemms[i - 1].queue) == second, (i, s.index)
        assert c.fields["accumulate"] == int(not s.first)
    assert not [c for c in cm.program.commands if re.search(r"(zero|bias into) C tile", c.note)]
    assert_matches(cm, feeds, seeds=(0, 1, 2, 3))
    three = compile_graph(g, dataclasses.replace(caps, queues=3))   # ... or chooses to
    assert three.tiled.compute_queues == 1 and three.program.events == 4
    assert {c.queue for c in three.program.commands} == {LOAD_Q, COMPUTE_QS[0], STORE_Q}
    assert_matches(three, feeds, seeds=(0, 1))
    # one accumulator bank: a C-initialising DMA would wait behind the other tile's GEMMs
    one_bank = dataclasses.replace(caps, acc_banks=1, acc_bank_rows=2 * caps.acc_bank_rows)
    assert compile_graph(g, one_bank).tiled.compute_queues == 1


def test_resident_a_loads_once_per_m_tile():
    """When an M tile's whole A (tm rows x every k-tile) fits an A buffer, the first tile of
    its M range loads it into a{M tile % 2} and the tiles of its other N groups read it there:
    A is loaded once, not once per N group; bit-exact in several interleavings, and the loads
    into a buffer still being read wait (without the load queue's waits for the compute queues
    an interleaving overwrites A or W under a GEMM)."""
    g, feeds = mlp(rng_for(640), batch=200, dims=(24, 64))
    cm = compile_graph(g, caps_for(4, **TINY), compute_queues=2)
    tg = cm.tiled.gemms[0]
    m_tiles = sorted({t.m0 for t in tg.tiles})
    assert tg.a_resident and len(m_tiles) > 2 and len(tg.tiles) > len(m_tiles)
    a_loads = [c for c in cm.program.commands if c.opcode == Opcode.DMA_LOAD and "load A" in c.note]
    first_steps = sum(len(t.steps) for t in tg.tiles if t.n0 == 0)
    assert len(a_loads) == first_steps < sum(len(t.steps) for t in tg.tiles)
    assert_matches(cm, feeds, seeds=(0, 1, 2))
    bad = _drop(cm, lambda c: c.queue == LOAD_Q and c.opcode == Opcode.WAIT_EVENT
                and c.fields["event"] in EV_COMPUTED)
    with pytest.raises(Hazard):
        for seed in range(20):
            execute(bad, cm.caps, cm.pack_inputs(feeds), seed=seed)


def test_gemm_engine_never_waits_for_a_signal_in_steady_state():
    """cost.simulate's timeline of the 256^3 make bench GEMM: after the first tile's ramp the
    GEMMs follow each other (the other compute queue's GEMM covers each SIGNAL) but for at most
    one firmware dispatch in all (the pipelined control core's firmware leaves one SIGNAL
    uncovered: a 106-cycle gap)."""
    from tools.bench import gemm_graph
    g, _ = gemm_graph(256)
    cm = compile_graph(g, caps_for(8))
    timeline = {}
    cost.simulate(cm.program.commands, cm.cycles, timeline=timeline)
    spans = sorted(timeline[i] for i, c in enumerate(cm.program.commands) if c.opcode == Opcode.GEMM)
    # steady state: after the first tile's ramp, before the last two tiles (the taper's halves,
    # whose shorter GEMMs the loads need not keep up with)
    tiles = cm.tiled.gemms[0].tiles
    first = len(tiles[0].steps)
    last = len(spans) - sum(len(t.steps) for t in tiles[-2:])
    gaps = [b[0] - a[1] for a, b in zip(spans[first:last], spans[first + 1:last])]
    # a tile's second step follows the first on its queue: its SIGNAL -> WAIT -> dispatch gap
    handoff = cost.RETIRE_LAT + 2 * cost.EVENT_ISSUE + cost.DISPATCH + cost.START_LAT
    assert len(gaps) > 10 and min(gaps) >= 0, gaps
    assert sum(gaps) <= (len(tiles) - 3) * handoff + cost.DISPATCH, gaps
    # the make bench goal (PE utilization >= 90% of the whole run; measured 93.7% on the RTL,
    # 279624 cycles, predicted 279192)
    assert 256 ** 3 / (8 * 8 * cm.report()["bound"]) > 0.93


def _vectors(cm):
    return [c for c in cm.program.commands if c.opcode == Opcode.VECTOR]


@pytest.mark.parametrize("dim", [4, 8])
@pytest.mark.parametrize("layout", ["banked", "wide_w"])
def test_fused_epilogue_one_vector_per_tile(dim, layout):
    """Per-tensor requantization: the bias is DMA'd into the C tile (the GEMM accumulates onto
    it) and one VECTOR covers every n-tile of the tile; bit-exact either way, in several
    interleavings, on a chip small enough for several M tiles, N groups and K chunks."""
    g, feeds = mlp(rng_for(650 + dim), batch=40, dims=(72, 100, 36))
    caps = caps_for(dim, **TINY)
    fused = compile_graph(g, caps, layout=layout, bias_in_c=True)
    tiles = sum(len(tg.tiles) for tg in fused.tiled.gemms)
    assert tiles > len(fused.tiled.gemms)
    assert len(_vectors(fused)) == tiles
    assert all(c.fields["ops.bias"] == 0 for c in _vectors(fused))
    bias_loads = [c for c in fused.program.commands
                  if c.opcode == Opcode.DMA_LOAD and "bias into C" in c.note]
    assert bias_loads and all(c.fields["acc"] == 1 and c.fields["host_row_stride"] == 0
                              for c in bias_loads)
    assert all(c.fields["accumulate"] for c in fused.program.commands if c.opcode == Opcode.GEMM)
    assert_matches(fused, feeds, seeds=(0, 1, 2))
    # bias_in_c=False: one VECTOR per n-tile adds the bias; a tile's first step overwrites C
    split = compile_graph(g, caps, layout=layout, bias_in_c=False, compute_queues=2)
    n_tiles = sum(-(-(t.n1 - t.n0) // dim) for tg in split.tiled.gemms for t in tg.tiles)
    assert len(_vectors(split)) == n_tiles >= tiles
    assert not [c for c in split.program.commands if "C tile" in c.note]
    assert_matches(split, feeds, seeds=(0, 1))


def test_per_channel_requantization_keeps_one_vector_per_n_tile():
    rng = rng_for(660)
    g = Graph("pc")
    x = g.input("x", (8, 16), scale=0.05, zero_point=3)
    w = g.const("w", rng.integers(-128, 128, (16, 24), dtype=np.int8),
                scale=np.linspace(0.005, 0.02, 24).astype(np.float32))
    b = g.const("b", rng.integers(-3000, 3000, 24, dtype=np.int32))
    y = g.linear(x, w, b, scale=out_scale(0.05, 0.01, 16), zero_point=-5, relu=True, name="fc")
    g.output(y)
    cm = compile_graph(g, caps_for(8), bias_in_c=True)
    assert len(cm.fused[0].mult) == 24 and len(set(cm.fused[0].mult.tolist())) > 1
    assert len(_vectors(cm)) == 3 and all(c.fields["ops.bias"] for c in _vectors(cm))
    assert_matches(cm, {"x": rng.integers(-128, 128, (8, 16), dtype=np.int8)}, seeds=(0, 1))


def test_removed_events_of_the_fused_schedule_are_caught():
    """The waits the schedule emits are needed: dropping one is a hazard (the reference
    executor's happens-before check) or a deadlock."""
    g, feeds = mlp(rng_for(670), batch=40, dims=(16, 40, 24))
    caps = caps_for(4, **TINY)
    cm = compile_graph(g, caps, layout="banked", bias_in_c=True)
    inputs = cm.pack_inputs(feeds)
    for s in range(3):
        execute(cm.program, caps, inputs, seed=s)
    # the C buffer's wait for the epilogue two tiles back (before the DMA that initialises C)
    c_free = [c for c in cm.program.commands if c.queue == LOAD_Q and re.search(r": c\d free$", c.note)]
    assert len(c_free) == sum(len(tg.tiles) for tg in cm.tiled.gemms) - 2
    bad = _drop(cm, lambda c: c.tag == c_free[0].tag)
    with pytest.raises(Hazard):
        execute(bad, caps, inputs, seed=0)
    # the per-step computed signal (buffer reuse) is still required
    bad = _drop(cm, lambda c: c.queue in COMPUTE_QS and c.opcode == Opcode.SIGNAL_EVENT
                and c.fields["value"] == 2)
    with pytest.raises((Hazard, CompileError, RuntimeError)):
        CommandIR(caps, bad).verify()
        execute(bad, caps, inputs, seed=0)
    # without the bias in C, a one-step tile's GEMM overwrites C itself; the epilogue two tiles
    # back ran on the same compute queue (steps alternate), so queue order frees C: no wait
    plain = compile_graph(g, caps, layout="banked", bias_in_c=False)
    assert not any(c.queue in COMPUTE_QS and c.opcode == Opcode.WAIT_EVENT
                   and re.search(r": c\d free$", c.note) for c in plain.program.commands)
    assert_matches(plain, feeds, seeds=(0, 1, 2))


@pytest.mark.parametrize("dim", [4, 8, 16])
def test_single_tile_layers_forward_their_output_on_chip(dim):
    """A single-tile layer's output buffer is the next single-tile layer's A: no A load, no wait
    for the store; the epilogue's SIGNAL on the compute queue is what orders them."""
    g, feeds = mlp(rng_for(680 + dim))
    cm = compile_graph(g, caps_for(dim))
    # the tiling pass decides which layers are single-tile (at dim 4 the first is split into N
    # groups, its loads overlapping its first group's GEMMs); every single-tile layer after a
    # single-tile layer reads its A on chip, and the chain has at least one such pair
    single = [len(tg.tiles) == 1 for tg in cm.tiled.gemms]
    forwarded = [f"fc{i}" for i in range(1, len(single)) if single[i - 1] and single[i]]
    assert forwarded, single
    notes = [c.note for c in cm.program.commands]
    assert sum("(A on chip)" in n for n in notes) > 0
    for name in forwarded:
        assert not any(n.startswith(f"{name}: load A") or n == f"{name}: operands stored" for n in notes)
    assert any(n.startswith("fc0: load A") for n in notes)
    assert_matches(cm, feeds, seeds=(0, 1, 2))
    off = compile_graph(g, caps_for(dim), forward=False)
    assert not any("(A on chip)" in c.note for c in off.program.commands)
    assert cm.report()["bound"] < off.report()["bound"]
    # the first GEMM reading it follows the producer's epilogue on the same compute queue:
    # without the epilogue's SIGNAL, it may read the output buffer before (or while) the vector
    # unit writes it
    first = next(i for i, n in enumerate(notes) if "(A on chip)" in n)
    q = cm.program.commands[first].queue
    sig = max(i for i in range(first) if cm.program.commands[i].queue == q
              and cm.program.commands[i].opcode == Opcode.SIGNAL_EVENT)
    assert cm.program.commands[sig].fields["event"] in EV_EPILOGUE
    bad = _drop(cm, lambda c: c.tag == cm.program.commands[sig].tag)
    with pytest.raises(Hazard):
        execute(bad, cm.caps, cm.pack_inputs(feeds), seed=0)


def test_ramp_shortens_the_pipeline_fill():
    """The program's first tile starts with short, growing k-steps (its first load is the fill
    nothing overlaps); the make bench GEMM at dim 8 uses the ramp and stays bit-exact."""
    from compiler.passes import k_steps
    assert k_steps(256, 16, 8) == [0, 128, 256]
    assert k_steps(200, 16, 8) == [0, 104, 200]           # 25 k-tiles: 13 + 12, not 16 + 9
    assert k_steps(200, 16, 8, [1, 3]) == [0, 8, 32, 120, 200]
    caps = caps_for(8)
    ramp = cost.ramp(16, 32, 256, 4, caps)                # the make bench 256^3 GEMM's first tile
    # the first step a quarter of the longest at most (its length grows with the firmware's
    # dispatch cost, which the ramp hides behind it)
    assert ramp[0] <= max(ramp) // 4 and all(a < b for a, b in zip(ramp, ramp[1:4])) and max(ramp) <= 16
    from tools.bench import gemm_graph
    g, feeds = gemm_graph(128)
    cm = compile_graph(g, caps)
    ks = [c.fields["k_tiles"] for c in cm.program.commands if c.opcode == Opcode.GEMM]
    assert ks[0] < ks[1] < ks[2]
    assert_matches(cm, feeds)


def test_missing_signal_is_a_deadlock_compile_error():
    g, _ = mlp(rng_for(700), dims=(16, 8))
    cm = compile_graph(g, caps_for(4))
    import copy
    last = max(i for i, c in enumerate(cm.program.commands)
               if c.opcode == Opcode.SIGNAL_EVENT and c.queue == LOAD_Q)
    bad = copy.deepcopy(cm.program)
    del bad.commands[last]
    with pytest.raises(CompileError, match="no other queue signals"):
        CommandIR(cm.caps, bad).verify()
    # a wait for a value signalled only later on the waiting queue itself: a deadlock
    bad = copy.deepcopy(cm.program)
    bad.commands.insert(0, ProgramCommand(STORE_Q, Opcode.WAIT_EVENT, dict(event=0, value=1)))
    bad.commands.append(ProgramCommand(LOAD_Q, Opcode.WAIT_EVENT, dict(event=3, value=99)))
    bad.commands.append(ProgramCommand(COMPUTE_QS[0], Opcode.SIGNAL_EVENT, dict(event=3, value=99)))
    bad.commands.insert(0, ProgramCommand(COMPUTE_QS[0], Opcode.WAIT_EVENT, dict(event=2, value=50)))
    bad.commands.append(ProgramCommand(LOAD_Q, Opcode.SIGNAL_EVENT, dict(event=2, value=50)))
    with pytest.raises(CompileError, match="deadlock"):
        CommandIR(cm.caps, bad).verify()


# ------------------------------------------------------------------------- verifiers

def test_command_ir_verifier_catches_malformed_commands():
    g, _ = mlp(rng_for(800), dims=(16, 8))
    cm = compile_graph(g, caps_for(4))
    import copy
    for mutate, match in (
            (lambda c: dict(c.fields, local_addr=cm.caps.spad_rows + 5), "outside"),
            (lambda c: dict(c.fields, rows=1 << 17), "does not fit"),
    ):
        p = copy.deepcopy(cm.program)
        i = next(i for i, c in enumerate(p.commands) if c.opcode == Opcode.DMA_LOAD and not c.fields.get("acc"))
        c = p.commands[i]
        p.commands[i] = ProgramCommand(c.queue, c.opcode, mutate(c), c.relocs, c.irq, c.tag, c.note)
        with pytest.raises(CompileError, match=match) as e:
            CommandIR(cm.caps, p).verify()
        assert f"command {i}" in str(e.value)
    p = copy.deepcopy(cm.program)
    p.commands.append(ProgramCommand(7, Opcode.NOP))
    with pytest.raises(CompileError, match="queue 7"):
        CommandIR(cm.caps, p).verify()


def test_tiled_ir_verifier_catches_malformed_tiles():
    import copy
    g, _ = mlp(rng_for(900), batch=40, dims=(72, 100, 36))
    cm = compile_graph(g, caps_for(4, **TINY))
    t = copy.deepcopy(cm.tiled)
    t0, t1 = t.gemms[0].tiles[:2]
    t1.m0, t1.m1, t1.n0, t1.n1 = t0.m0, t0.m1, t0.n0, t0.n1  # overlapping tiles
    with pytest.raises(CompileError, match="fc0.*(cover|malformed|larger)"):
        t.verify()
    t = copy.deepcopy(cm.tiled)
    t.gemms[1].tm = 10_000
    with pytest.raises(CompileError, match="fc1.*rows of buffer a"):
        t.verify()
    t = copy.deepcopy(cm.tiled)
    b = t.buffers["b0"]
    t.buffers["b0"] = type(b)(b.name, b.mem, t.buffers["a1"].base, b.rows, b.bank)
    with pytest.raises(CompileError, match="overlaps"):
        t.verify()
    t = copy.deepcopy(cm.tiled)
    t.gemms[0].tiles[0].steps[1].k0 += 4
    with pytest.raises(CompileError, match="fc0.*step"):
        t.verify()


def test_fused_verifier_catches_bad_shift():
    from compiler.ir import verify_fused
    g, _ = mlp(rng_for(1000), dims=(16, 8))
    fused = fuse(g)
    fused[0].shift = fused[0].shift.copy()
    fused[0].shift[3] = 70
    with pytest.raises(CompileError, match="linear 'fc0'.*shift"):
        verify_fused(fused, g.inputs)


# ------------------------------------------------------------------------- compile errors

def _err(build, node):
    with pytest.raises(CompileError) as e:
        build()
    assert node in str(e.value), f"{e.value} does not name {node}"
    return str(e.value)


def test_unsupported_ops_shapes_and_dtypes_are_compile_errors():
    caps = caps_for(8)

    def unknown_op():
        g = Graph()
        x = g.input("x", (4, 8))
        g.output(g.custom("argmax", x, shape=(4, 8), name="am"))
        compile_graph(g, caps)
    assert "unsupported op 'argmax'" in _err(unknown_op, "argmax 'am'")

    def float_input():
        Graph().input("xf", (4, 8), dtype="float32")
    assert "dtype" in _err(float_input, "input 'xf'")

    def float_const():
        Graph().const("wf", np.zeros((4, 4), np.float32))
    assert "dtype" in _err(float_const, "const 'wf'")

    def k_mismatch():
        g = Graph()
        x = g.input("x", (4, 8))
        g.linear(x, g.const("w", np.zeros((9, 4), np.int8)), scale=1.0, name="fc")
    assert "K=9" in _err(k_mismatch, "linear 'fc'")

    def int32_output():
        g = Graph()
        x = g.input("x", (4, 8))
        g.output(g.matmul(x, g.const("w", np.zeros((8, 4), np.int8)), name="mm"))
        compile_graph(g, caps)
    assert "int32" in _err(int32_output, "matmul 'mm'")

    def conv_not_on_input():
        g = Graph()
        x = g.input("x", (1, 4, 4, 8))
        h = g.relu(x, name="r")
        g.output(g.conv2d(h, g.const("cw", np.zeros((3, 3, 8, 4), np.int8)), scale=1.0, padding=1,
                          name="c"))
        compile_graph(g, caps)
    assert "host preprocessing" in _err(conv_not_on_input, "conv2d 'c'")

    def conv_kernel_too_big():
        g = Graph()
        x = g.input("x", (1, 2, 2, 8))
        g.conv2d(x, g.const("cw", np.zeros((3, 3, 8, 4), np.int8)), scale=1.0, name="c")
    assert "larger than" in _err(conv_kernel_too_big, "conv2d 'c'")

    def add_shapes():
        g = Graph()
        g.add(g.input("a", (4, 8)), g.input("b", (4, 9)), name="s")
    assert "shapes differ" in _err(add_shapes, "add 's'")

    def weight_zero_point():
        g = Graph()
        g.linear(g.input("x", (4, 8)), g.const("w", np.zeros((8, 4), np.int8), zero_point=3),
                 scale=1.0, name="fc")
    assert "zero point" in _err(weight_zero_point, "linear 'fc'")

    def rank3_weight():
        g = Graph()
        g.matmul(g.input("x", (4, 8)), g.const("w", np.zeros((8, 4, 2), np.int8)), name="mm")
    _err(rank3_weight, "matmul 'mm'")


def test_too_many_parameters_for_the_accumulator():
    g, _ = mlp(rng_for(1100), dims=(8, 2048))
    with pytest.raises(CompileError, match="accumulator"):
        compile_graph(g, caps_for(4, spad_bank_rows=64, acc_bank_rows=64))


# ------------------------------------------------------------------------- dumps

def test_dumps_are_mlir_generic_and_stable():
    g, _ = mlp(rng_for(1200), batch=40, dims=(72, 100, 36))
    cm = compile_graph(g, caps_for(4, **TINY))
    again = compile_graph(g, caps_for(4, **TINY))
    assert cm.dumps == again.dumps
    expect = {"graph": {"kaki.input", "kaki.const", "kaki.linear", "kaki.return"},
              "fused": {"kaki.input", "kaki.const", "kaki.fused_gemm", "kaki.return"},
              "tiled": {"kaki.alloc", "kaki.tiling", "kaki.tile.load", "kaki.tile.gemm",
                        "kaki.tile.epilogue", "kaki.tile.store"},
              "commands": {"kaki.dma_load", "kaki.dma_store", "kaki.gemm", "kaki.vector",
                           "kaki.signal", "kaki.wait"}}
    for level, text in cm.dumps.items():
        name, ops = mlir.parse(text)
        assert name == "mlp"
        assert {op for _, op, _, _, _ in ops} == expect[level], level
    _, ops = mlir.parse(cm.dumps["commands"])
    assert len(ops) == len(cm.program.commands)
    assert re.search(r'%fc1 = "kaki.linear"\(%fc0, %w1, %b1\) \{.*relu = true\} : '
                     r'\(tensor<40x72xi8>|\(tensor<40x100xi8>', cm.dumps["graph"])
    with pytest.raises(ValueError, match="used before"):
        mlir.parse('"builtin.module"() ({\n  %a = "kaki.x"(%b) : (i8) -> i8\n}) {sym_name = "m"} : () -> ()\n')


# ------------------------------------------------------------------------- cost model

def test_cost_model():
    caps = caps_for(8)
    g, _ = mlp(rng_for(1300))
    cm = compile_graph(g, caps)
    assert len(cm.cycles) == len(cm.program.commands) and all(c > 0 for c in cm.cycles)
    for c, cy in zip(cm.program.commands, cm.cycles):
        if c.opcode == Opcode.GEMM:
            f = c.fields
            assert cy == gemm_cycles(f["m"], f["k_tiles"], f["n_tiles"], caps,
                                     shared_bank=gemm_banks_shared(f, caps))
            # the streams overlap: a tile's A rows or B rows, whichever are more
            assert cy >= f["k_tiles"] * f["n_tiles"] * max(f["m"], caps.dim)
    # the GEMM engine's block bench checks every command it runs against this model, cycle
    # for cycle (cocotb_tests/cocotb_gemm_engine.py); here its arithmetic: 32^3 and 64^3 (A and B
    # in different banks), the same with the two ports taking turns in one bank, and a
    # transposed B, whose column writes hold the B stream until the A rows of the bank's last
    # tile have passed every row
    assert gemm_cycles(32, 4, 4, caps) == 2 + 8 + 15 * 32 + 32 + 16 + 2 == 540
    assert gemm_cycles(64, 8, 8, caps) == 2 + 8 + 63 * 64 + 64 + 16 + 2 == 4124
    assert gemm_cycles(32, 4, 4, caps, shared_bank=True) == 2 + 16 * 40 + 16 + 2 == 660
    assert gemm_cycles(1, 4, 4, caps) == gemm_cycles(1, 4, 4, caps, b_transpose=True) \
        == 2 + 16 * 8 + 1 + 16 + 2
    assert gemm_cycles(8, 1, 3, caps, b_transpose=True) == 2 + 38 + 16 + 2   # B at 0, 8, 22
    assert gemm_stream_cycles(8, 3, 8) == 32 and gemm_stream_cycles(8, 3, 8, b_transpose=True) == 38
    # DMA fitted on make bench's cost-model family (seed verif.graph_family.FIT_SEED): a cycle
    # per 8-byte bus beat, loads and stores; a row not aligned to the bus touches a beat more
    small = ProgramCommand(0, Opcode.DMA_LOAD, dict(rows=8, planes=1, row_bytes=8))
    big = ProgramCommand(0, Opcode.DMA_LOAD, dict(rows=8, planes=4, row_bytes=64))
    assert command_cycles(small, caps) == DMA_SETUP + 8
    assert command_cycles(big, caps) == DMA_SETUP + 32 * 8
    store = ProgramCommand(2, Opcode.DMA_STORE, dict(rows=16, planes=2, row_bytes=8))
    assert command_cycles(store, caps) == DMA_SETUP + 32
    # rows 61 bytes apart start at offsets 0, 5, 2, 7, 4, 1, 6, 3 of a beat: all but the first
    # take two beats; a relocated buffer offset shifts them (4, 1, 6, ...: again seven)
    odd = dict(rows=8, planes=1, row_bytes=8, host_row_stride=61)
    assert command_cycles(ProgramCommand(0, Opcode.DMA_LOAD, odd), caps) == DMA_SETUP + 15
    moved = ProgramCommand(2, Opcode.DMA_STORE, odd, (Reloc("host_addr", "y", 4),))
    assert command_cycles(moved, caps) == DMA_SETUP + 15
    zero = ProgramCommand(0, Opcode.DMA_LOAD, dict(rows=8, planes=2, row_bytes=0))
    assert command_cycles(zero, caps) == DMA_SETUP + 16      # no bus traffic: a row a cycle
    rep = cm.report()
    assert rep["commands"] == len(cm.cycles)
    assert max(rep["engines"].values()) <= rep["lower_bound"] <= rep["bound"]
    assert rep["bound"] <= rep["serial"] + rep["control"] + len(cm.cycles) * (RETIRE_LAT + START_LAT)


def test_dma_beats_count_unaligned_rows():
    """cost.dma_beats (counted per residue class of the row starts) equals the beats of every
    row counted one by one, for any offset, strides, row length and bus width."""
    rng = rng_for(1310)
    for dim, bus in ((8, 8), (16, 8), (4, 8), (8, 4)):
        caps = dataclasses.replace(caps_for(dim), dma_data_bytes=bus)
        for _ in range(300):
            rows, planes = (int(v) for v in rng.integers(1, 40, 2))
            rb, off, rs, ps = (int(v) for v in rng.integers(0, 300, 4))
            start = off + np.arange(planes)[:, None] * ps + np.arange(rows)[None, :] * rs
            want = int(((start % bus + rb + bus - 1) // bus).sum()) if rb else 0
            assert cost.dma_beats(rows, planes, rb, caps, off, rs, ps) == want
        assert cost.mean_row_beats(bus, bus, caps) == 1


def _cmd(queue, op, **fields):
    return ProgramCommand(queue, op, fields)


def test_simulated_run_time_models_the_issue_unit():
    """cost.simulate: issue cost per descriptor, SIGNAL after retirement, engine overlap, the
    completion writer."""
    G, L = Opcode.GEMM, Opcode.DMA_LOAD
    # two GEMMs back to back: the second queues behind the first in the engine
    two = [_cmd(1, G), _cmd(1, G)]
    assert simulate(two, [1000, 1000]) == DISPATCH + START_LAT + 2000 + RETIRE_LAT + CPL_WRITE
    # a SIGNAL between them waits for the first's retirement: a gap on the engine
    sig = [_cmd(1, G), _cmd(1, Opcode.SIGNAL_EVENT, event=0, value=1), _cmd(1, G)]
    gap = simulate(sig, [1000, EVENT_ISSUE, 1000]) - simulate(two, [1000, 1000])
    assert gap >= RETIRE_LAT
    # a load on another queue overlaps the GEMM; a WAIT on it orders the GEMM after it
    par = [_cmd(0, L), _cmd(1, G)]
    assert simulate(par, [1000, 1000]) < 2000 + 2 * DISPATCH
    dep = [_cmd(0, L), _cmd(0, Opcode.SIGNAL_EVENT, event=0, value=1),
           _cmd(1, Opcode.WAIT_EVENT, event=0, value=1), _cmd(1, G)]
    assert simulate(dep, [1000, EVENT_ISSUE, EVENT_ISSUE, 1000]) > 2000 + RETIRE_LAT
    # records are written one at a time: ten NOPs take at least ten record writes
    assert simulate([_cmd(0, Opcode.NOP)] * 10, [EVENT_ISSUE] * 10) >= 10 * CPL_WRITE
    # a WAIT nothing here signals (a layer cut out of a program) counts as reached
    assert simulate([_cmd(1, Opcode.WAIT_EVENT, event=3, value=9), _cmd(1, G)], [EVENT_ISSUE, 10]) > 0
