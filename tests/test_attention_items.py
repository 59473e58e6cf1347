"""Attention tiles spanning several whole batch items (compiler/special_layers.py
``tile_attention``): the batched GEMMs over (item, head) pairs, one SOFTMAX per pair with its
item's mask offset, per item its loads and store. Plain batched attention graphs against
``compiler.graph.interpret`` and a decode step of 8 sequences over the paged KV cache against
the whole-window graph, on the reference executor (every conflicting pair of commands must be
ordered). No simulator."""
import functools
import os

import numpy as np
import pytest

from compiler import kv_cache as kc
from compiler import llm_model
from compiler import special_layers as sl
from compiler.compile import compile_graph
from compiler.graph import Graph, interpret
from compiler.refexec import execute
from hdl_gen.config import KakiConfig
from spec.capabilities import Capabilities
from spec.descriptors import Opcode

SEED = int(os.environ.get("SEED", "1"))


def _attention_tiles(cm):
    return [tg for tg in cm.tiled.gemms if tg.gemm.kind == "attention"]


def _items_per_tile(tg):
    g = tg.gemm
    return [t.rows // g.sq if t.rows >= g.sq else 1 for t in tg.tiles]


def _graph(rng, batch, sq, sk, d, heads, causal):
    g = Graph("batched_attention")
    q, k, v = (g.input(n, (batch, s, d), scale=0.05) for n, s in (("q", sq), ("k", sk), ("v", sk)))
    g.output(g.attention(q, k, v, heads=heads, score_scale=0.06, scale=0.02, causal=causal))
    feeds = {n: rng.integers(-128, 128, (batch, s, d)).astype(np.int8)
             for n, s in (("q", sq), ("k", sk), ("v", sk))}
    return g, feeds


@pytest.mark.parametrize("dim", [4, 8])
@pytest.mark.parametrize("shape", [
    # batch, Sq, Sk, D, heads, causal
    (6, 2, 6, 32, 4, False),
    (5, 3, 7, 24, 2, True),          # a head narrower than the array at dim 8; 5 items: uneven
    (8, 1, 16, 32, 4, True),         # decode-like: one query row per item
    (7, 4, 9, 12, 3, True),          # a causal mask against a longer key sequence
])
def test_plain_batched_attention_tiles_span_items(monkeypatch, dim, shape):
    """With as many items per tile as fit, tiles span items, the bits are the interpreter's;
    the default rule (the pipeline estimate) also gives the interpreter's bits."""
    batch, sq, sk, d, heads, causal = shape
    rng = np.random.default_rng(SEED + sum(shape) + dim)
    g, feeds = _graph(rng, batch, sq, sk, d, heads, causal)
    want = interpret(g, feeds)
    caps = Capabilities.from_config(KakiConfig(dim=dim))
    for policy in ("fewest", "estimate"):
        monkeypatch.setattr(sl, "ATTENTION_TILING", policy)
        cm = compile_graph(g, caps)
        tg, = _attention_tiles(cm)
        if policy == "fewest":
            assert max(_items_per_tile(tg)) > 1, [(t.m0, t.m1) for t in tg.tiles]
            pairs = [c.fields["batches_m1"] + 1 for c in cm.program.commands
                     if c.opcode == Opcode.GEMM and c.fields.get("b_transpose")]
            assert max(pairs) == max(_items_per_tile(tg)) * tg.kc
        softmaxes = sum(c.opcode == Opcode.SOFTMAX for c in cm.program.commands)
        assert softmaxes == batch * heads            # one per (item, head)
        for seed in (0, 1):
            model, addr = execute(cm.program, caps, cm.pack_inputs(feeds), seed=seed)
            got = cm.unpack_outputs(lambda n, nb: model.host[addr[n]:addr[n] + nb].tobytes())
            for name, ref in want.items():
                assert np.array_equal(got[name], ref), (policy, seed, name)


def test_default_rule_is_not_slower_than_the_fewest_tiles():
    """The pipeline estimate's choice is, by the cost model's simulation of the whole program,
    at least as fast as the most items per tile (at these shapes: one item per tile, the loads
    of the next item overlapping the compute of this one)."""
    for shape in [(6, 2, 6, 32, 4, False), (8, 1, 16, 32, 4, True)]:
        g, _ = _graph(np.random.default_rng(0), *shape)
        bound = {}
        for policy in ("estimate", "fewest"):
            saved, sl.ATTENTION_TILING = sl.ATTENTION_TILING, policy
            try:
                bound[policy] = compile_graph(g, Capabilities.default(8)).report()["bound"]
            finally:
                sl.ATTENTION_TILING = saved
        assert bound["estimate"] <= bound["fewest"], (shape, bound)


def test_verify_rejects_a_tile_splitting_an_item():
    from compiler.errors import CompileError
    g, _ = _graph(np.random.default_rng(0), 4, 2, 4, 16, 2, False)
    cm = compile_graph(g, Capabilities.default(8))
    tg, = _attention_tiles(cm)
    t0, t1 = tg.tiles[0], tg.tiles[1]
    if t0.m1 == t1.m0:               # move a row from tile 1 to tile 0 across an item edge
        t0.m1 += 1
        t1.m0 += 1
    else:                            # same rows, the next head group: make tile 0 odd
        t0.m1 = t0.m0 + 3
    with pytest.raises(CompileError):
        cm.tiled.verify()


# ------------------------------------------------------------- a decode step of 8 sequences

@functools.lru_cache(maxsize=None)
def _pack():
    return llm_model.load()


@functools.lru_cache(maxsize=None)
def _step_program(items, tokens, pages, blocks, policy):
    saved = sl.ATTENTION_TILING
    sl.ATTENTION_TILING = policy
    try:
        return compile_graph(kc.step_graph(_pack(), items=items, tokens=tokens, pages=pages,
                                           blocks=blocks), Capabilities.default(8))
    finally:
        sl.ATTENTION_TILING = saved


def _launch(layout, pool, work, rows, tokens, pages, policy):
    """One step program run on the reference executor: (its logits, the pool after it)."""
    caps = Capabilities.default(8)
    cm = _step_program(len(work), tokens, pages, layout.blocks, policy)
    params = kc.step_params(layout, work, items=len(work), tokens=tokens, pages=pages)
    ins = cm.pack_inputs({cm.graph.inputs[0].name: np.stack(
        [kc.pad_rows(r, tokens) for r in rows]).astype(np.int8)})
    ins[kc.POOL] = pool
    model, addr = execute(cm.program, caps, ins, params=params, seed=SEED)
    out, = cm.unpack_outputs(lambda n, nb: bytes(model.host[addr[n]:addr[n] + nb])).values()
    a = addr[kc.POOL]
    return out, bytes(model.host[a:a + layout.pool_bytes])


def test_decode_step_of_8_items_in_tiles_spanning_items():
    """8 sequences at different positions (0 .. 26), each with its own scattered block table,
    decode one token each in one program whose attention tiles hold several items: every row
    is the whole-window graph's logits."""
    print(f"SEED={SEED}")
    rng = np.random.default_rng(SEED + 8)
    pack = _pack()
    texts = ["Kaki", "The driver talks", "A", "Every wait has a timeout", "int8 GEMM",
             "The compiler emits one list", "Pages", "Block tables"]
    seqs = [list(pack.vocab.encode(t)) for t in texts]
    layout = kc.KvLayout(llm_model.LAYERS, llm_model.D_MODEL, 20)
    pool = rng.integers(0, 256, layout.pool_bytes, dtype=np.uint8).tobytes()
    blocks = [int(b) for b in rng.permutation(layout.blocks)]
    tables = [blocks[2 * i:2 * i + 2] for i in range(len(seqs))]
    lengths = [len(s) - 1 for s in seqs]
    assert len(set(lengths)) == len(seqs) and max(lengths) < 2 * kc.PAGE_TOKENS
    for s, n, table in zip(seqs, lengths, tables):       # prefill all but the last token
        if n:
            _, pool = _launch(layout, pool, [(0, n, table)], [pack.embed(s)[0, :n]], 32, 2,
                              "estimate")
    cm = _step_program(len(seqs), 1, 2, layout.blocks, "fewest")
    for tg in _attention_tiles(cm):
        assert max(_items_per_tile(tg)) > 1, [(t.m0, t.m1) for t in tg.tiles]
    out, _ = _launch(layout, pool, [(n, 1, t) for n, t in zip(lengths, tables)],
                     [pack.embed(s)[0, n:n + 1] for s, n in zip(seqs, lengths)], 1, 2, "fewest")
    for i, (s, n) in enumerate(zip(seqs, lengths)):
        ref = pack.logits(pack.graph(len(s)), s)
        assert np.array_equal(out[i, 0], ref[n]), f"item {i} at position {n}"
