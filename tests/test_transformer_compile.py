"""Transformer layers through the compiler: special-function layers (LayerNorm, RMSNorm,
GELU/SiLU tables, elementwise multiply, softmax) and multi-head attention tiled, scheduled and
run on the golden device model under the queue/event semantics (``compiler.refexec``: every
interleaving seed, every unordered memory access a Hazard), bit-exact with the graph
interpreter. Seeded by ``SEED`` (printed)."""
import os
import secrets

import numpy as np
import pytest

from compiler.compile import compile_graph
from compiler.errors import CompileError
from compiler.graph import Graph, interpret
from compiler.refexec import Hazard, execute
from driver.program import Program
from hdl_gen.config import KakiConfig
from spec.capabilities import Capabilities
from spec.descriptors import Opcode

SEED = int(os.environ.get("SEED") or secrets.randbelow(2**31))
RERUN = f"SEED={SEED} .venv/bin/python -m pytest tests/test_transformer_compile.py"


@pytest.fixture
def rng(request):
    print(f"[transformer compile] SEED={SEED} (rerun: {RERUN})")
    return np.random.default_rng(SEED + sum(map(ord, request.node.name)))


def caps_for(dim, **kw):
    return Capabilities.from_config(KakiConfig(dim=dim, **kw))


def _linear(g, rng, x, n, name, zero_point=0):
    w = g.const(f"{name}.w", rng.integers(-64, 64, (x.cols, n)).astype(np.int8), scale=0.02)
    b = g.const(f"{name}.b", rng.integers(-500, 500, n).astype(np.int32))
    return g.linear(x, w, b, scale=0.02 * 0.04 * 40 * np.sqrt(x.cols) / 4, zero_point=zero_point,
                    name=name)


def block(rng, kind, batch=1, seq=16, d=32, heads=4, keys=None):
    """A pre-norm block: norm -> q/k/v -> attention -> out projection + residual -> norm -> FFN
    (encoder: GELU; decoder: SiLU gate times up projection) + residual. ``keys``: a longer key
    sequence (a decoder step with earlier positions) from a second input."""
    g = Graph(f"{kind}_block")
    x = g.input("x", (batch, seq, d), scale=0.05)
    src = g.input("mem", (batch, keys, d), scale=0.05) if keys else x
    gamma, beta = rng.uniform(0.5, 1.5, d), rng.normal(0, 0.2, d)
    if kind == "encoder":
        h, hk = (g.layer_norm(t, gamma, beta, scale=0.03, name=f"ln1{i}") for i, t in
                 enumerate((x, src)))
    else:
        h, hk = (g.rms_norm(t, gamma, scale=0.03, name=f"rms1{i}") for i, t in enumerate((x, src)))
    q, k, v = _linear(g, rng, h, d, "q"), _linear(g, rng, hk, d, "k"), _linear(g, rng, hk, d, "v")
    a = g.attention(q, k, v, heads=heads, score_scale=0.06, scale=0.02,
                    causal=kind == "decoder", name="attn")
    o = g.requantize(_linear(g, rng, a, d, "o"), scale=0.05, name="o.rq")
    x1 = g.add(x, o, name="res1")
    if kind == "encoder":
        f = g.gelu(_linear(g, rng, g.layer_norm(x1, gamma, beta, scale=0.03, name="ln2"), 2 * d,
                           "up", zero_point=-10), scale=0.02, zero_point=-100, name="gelu")
    else:
        h2 = g.rms_norm(x1, gamma, scale=0.03, name="rms2")
        f = g.mul(g.silu(_linear(g, rng, h2, 2 * d, "gate"), scale=0.02, name="silu"),
                  _linear(g, rng, h2, 2 * d, "up"), scale=0.0015, name="swiglu")
    y = g.add(x1, g.requantize(_linear(g, rng, f, d, "down"), scale=0.05, name="down.rq"),
              name="res2")
    g.output(y, a)
    feeds = {"x": rng.integers(-128, 128, (batch, seq, d)).astype(np.int8)}
    if keys:
        feeds["mem"] = rng.integers(-128, 128, (batch, keys, d)).astype(np.int8)
    return g, feeds


def run(cm, feeds, seed):
    model, addrs = execute(cm.program, cm.caps, cm.pack_inputs(feeds), seed=seed)
    return cm.unpack_outputs(lambda name, nb: model.host[addrs[name]:addrs[name] + nb].tobytes())


def assert_bit_exact(cm, feeds, seeds=(0, 1)):
    ref = interpret(cm.graph, feeds)
    for s in seeds:
        got = run(cm, feeds, s)
        for k, want in ref.items():
            bad = np.argwhere(got[k] != want)
            assert bad.size == 0, (f"{k}: {len(bad)} wrong (interleaving seed {s}, {RERUN}), "
                                   f"first at {tuple(bad[0])}: {got[k][tuple(bad[0])]} != "
                                   f"{want[tuple(bad[0])]}")
    return ref


def opcodes(cm):
    return {Opcode(c.opcode) for c in cm.program.commands}


@pytest.mark.parametrize("dim", [4, 8, 16])
@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_block_runs_entirely_on_the_chip(rng, dim, kind):
    g, feeds = block(rng, kind)
    cm = compile_graph(g, caps_for(dim))
    assert_bit_exact(cm, feeds)
    ops = opcodes(cm)
    want = {Opcode.GEMM, Opcode.VECTOR, Opcode.SOFTMAX, Opcode.LUT}
    want |= {Opcode.LAYERNORM} if kind == "encoder" else {Opcode.RMSNORM, Opcode.EMUL}
    assert want <= ops, want - ops
    # Q·Kᵀ reads K transposed as stored, every head of a group in one batched command
    qk = [c for c in cm.program.commands if c.opcode == Opcode.GEMM and c.fields.get("b_transpose")]
    assert qk and all(c.fields["batches_m1"] + 1 == 4 for c in qk)
    layers = {tg.gemm.name: tg.gemm.kind for tg in cm.tiled.gemms}
    assert layers["attn"] == "attention"
    assert sum(k == "sfu" for k in layers.values()) == (4 if kind == "encoder" else 5)


@pytest.mark.parametrize("dim", [4, 8])
def test_small_buffers_tile_rows_queries_and_heads(rng, dim):
    """A chip with small memories: many row tiles per SFU layer, attention tiled over query rows
    and head groups, two batch items, a causal mask against a longer key sequence."""
    g, feeds = block(rng, "decoder", batch=2, seq=12, d=32, keys=20)
    cm = compile_graph(g, caps_for(dim, spad_bank_rows=128, acc_bank_rows=512))
    attn = next(tg for tg in cm.tiled.gemms if tg.gemm.kind == "attention")
    assert len(attn.tiles) > 2 and attn.kc < 4, (len(attn.tiles), attn.kc)
    assert all(len(tg.tiles) > 1 for tg in cm.tiled.gemms if tg.gemm.kind == "sfu")
    assert_bit_exact(cm, feeds, seeds=(0, 1, 2))


def test_heads_narrower_than_the_array(rng):
    """dh = 8 on a 16-wide array: each head padded to a k-tile, loaded and stored head by head."""
    g, feeds = block(rng, "encoder", seq=10, d=32, heads=4)
    cm = compile_graph(g, caps_for(16))
    assert_bit_exact(cm, feeds)


def test_standalone_causal_softmax_over_blocks(rng):
    """[heads, Sq, Sk] scores in row tiles that cross the heads' blocks: each SOFTMAX command
    restarts the mask at its block position."""
    g = Graph("scores")
    s = g.input("s", (3, 7, 9), scale=0.08)
    g.output(g.softmax(s, causal=True, name="p"))
    cm = compile_graph(g, caps_for(4, spad_bank_rows=64, acc_bank_rows=128))
    tiles = cm.tiled.gemms[0].tiles
    assert len(tiles) > 1 and any(t.m0 // 7 != (t.m1 - 1) // 7 for t in tiles), tiles
    offsets = [c.fields["mask_offset"] for c in cm.program.commands if c.opcode == Opcode.SOFTMAX]
    assert len(offsets) > len(tiles) and len(set(offsets)) > 1, offsets
    assert_bit_exact(cm, {"s": rng.integers(-128, 128, (3, 7, 9)).astype(np.int8)}, seeds=(0, 1, 2))


def _without_first(program, pred):
    i = next(i for i, c in enumerate(program.commands) if pred(c))
    bad = Program(program.name, events=program.events)
    for name, spec in program.buffers.items():
        bad.add_buffer(spec)
    for j, c in enumerate(program.commands):
        if j != i:
            bad.add(c)
    return bad


def test_the_attention_barriers_are_needed(rng):
    """Drop the BARRIER between the scores GEMM and their requantization: some interleaving reads
    the accumulator before the GEMM wrote it (a Hazard), so the barriers order real work."""
    g, feeds = block(rng, "encoder", seq=8)
    cm = compile_graph(g, caps_for(8))
    bad = _without_first(cm.program, lambda c: c.opcode == Opcode.BARRIER)
    with pytest.raises(Hazard):
        for s in range(8):
            execute(bad, cm.caps, cm.pack_inputs(feeds), seed=s)


def test_layers_that_do_not_fit_name_the_node():
    g = Graph("long")
    x = g.input("x", (2, 4096), scale=0.05)
    g.output(g.gelu(x, scale=0.02, name="act"))
    with pytest.raises(CompileError, match="gelu 'act'|lut 'act'"):
        compile_graph(g, caps_for(4, spad_bank_rows=64, acc_bank_rows=128))
    g = Graph("att")
    q = g.input("q", (4, 4096), scale=0.05)
    g.output(g.attention(q, q, q, heads=1, score_scale=0.1, scale=0.05, name="big"))
    with pytest.raises(CompileError, match="attention 'big'.*not even one query row"):
        compile_graph(g, caps_for(4, spad_bank_rows=64, acc_bank_rows=128))


@pytest.mark.parametrize("dim,sq,sk,d,causal", [(4, 6, 80, 32, True), (8, 10, 100, 32, True),
                                                (8, 5, 70, 24, False), (16, 9, 120, 64, True)])
def test_keys_longer_than_the_chip_go_through_host_memory(rng, dim, sq, sk, d, causal):
    """K and V of one head do not fit: the attention becomes scores (tiled over keys), softmax
    and P·V (accumulating over key chunks) layers through host scratch tensors — the same bits
    as the interpreter (two batch items, a causal mask against a longer key sequence, heads
    narrower than the array)."""
    g = Graph("long")
    q = g.input("q", (2, sq, d), scale=0.05)
    k, v = (g.input(n, (2, sk, d), scale=0.05) for n in ("k", "v"))
    g.output(g.attention(q, k, v, heads=4, score_scale=0.04, scale=0.02, causal=causal,
                         name="att"))
    cm = compile_graph(g, caps_for(dim, spad_bank_rows=128, acc_bank_rows=256))
    kinds = [tg.gemm.kind for tg in cm.tiled.gemms]
    assert kinds == ["attention_scores", "sfu", "attention_pv"], kinds
    pv = cm.tiled.gemms[2]
    assert all(len(t.steps) > 1 for t in pv.tiles)      # P·V accumulates over key chunks
    feeds = {n: rng.integers(-128, 128, (2, s, d)).astype(np.int8)
             for n, s in (("q", sq), ("k", sk), ("v", sk))}
    assert_bit_exact(cm, feeds, seeds=(0, 1, 2))


def test_random_block_shapes(rng):
    """Blocks of random shapes from SEED: array width, sequence (1 = a single decode token),
    heads and head width (not always a multiple of the array), batch, a longer key sequence."""
    for _ in range(4):
        dim = int(rng.choice([4, 8, 16]))
        heads = int(rng.choice([1, 2, 3, 4, 6, 8]))
        d = heads * int(rng.integers(2, 13)) * 2
        seq = int(rng.integers(1, 41))
        keys = int(rng.integers(seq + 1, seq + 30)) if rng.random() < 0.3 else None
        kind = str(rng.choice(["encoder", "decoder"]))
        batch = int(rng.integers(1, 3))
        g, feeds = block(rng, kind, batch=batch, seq=seq, d=d, heads=heads, keys=keys)
        print(f"  {kind} dim {dim} batch {batch} seq {seq} keys {keys} d {d} heads {heads}")
        assert_bit_exact(compile_graph(g, caps_for(dim)), feeds, seeds=(int(rng.integers(99)),))


@pytest.mark.parametrize("dim,small", [(4, False), (8, True), (16, False)])
def test_heads_matmul_chain_is_the_attention(rng, dim, small):
    """The batched matmuls over heads as graph ops — Q·Kᵀ (K transposed as stored) to int8 scores
    [B, heads, Sq, Sk], a causal softmax over them, P·V with the heads merged — compile to the
    scores / softmax / P·V layers and give exactly the attention op's bits."""
    b, sq, sk, d, heads = 2, 6, 11, 24, 3
    g = Graph("chain")
    q = g.input("q", (b, sq, d), scale=0.05)
    k, v = (g.input(n, (b, sk, d), scale=0.05) for n in ("k", "v"))
    att = g.attention(q, k, v, heads=heads, score_scale=0.05, scale=0.02, causal=True, name="att")
    s = g.heads_matmul(q, k, heads=heads, transpose_b=True, scale=0.05,
                       alpha=1 / np.sqrt(d // heads), name="qk")
    p = g.softmax(s, causal=True, name="p")
    o = g.heads_matmul(p, v, heads=heads, transpose_b=False, scale=0.02, name="pv")
    g.output(o, att, s)
    assert s.shape == (b, heads, sq, sk) and o.shape == (b, sq, d)
    feeds = {n: rng.integers(-128, 128, (b, x, d)).astype(np.int8)
             for n, x in (("q", sq), ("k", sk), ("v", sk))}
    ref = interpret(g, feeds)
    # the P·V multiplier is the same real number computed in another order: at most one code
    assert np.abs(ref[o.name].astype(int) - ref[att.name]).max() <= 1
    caps = caps_for(dim, spad_bank_rows=128, acc_bank_rows=256) if small else caps_for(dim)
    cm = compile_graph(g, caps)
    kinds = [tg.gemm.kind for tg in cm.tiled.gemms]
    assert kinds.count("attention_scores") >= 1 and kinds.count("attention_pv") >= 1, kinds
    assert_bit_exact(cm, feeds, seeds=(0, 1))


def test_heads_matmul_shapes_are_checked():
    g = Graph("bad")
    a, b = g.input("a", (4, 12), scale=0.1), g.input("b", (5, 10), scale=0.1)
    with pytest.raises(CompileError, match="heads_matmul 'x'.*shapes"):
        g.heads_matmul(a, b, heads=2, transpose_b=True, scale=0.1, name="x")
    z = g.input("z", (4, 12), scale=0.1, zero_point=3)
    with pytest.raises(CompileError, match="heads_matmul 'y'.*zero point 3"):
        g.heads_matmul(z, a, heads=2, transpose_b=True, scale=0.1, name="y")
