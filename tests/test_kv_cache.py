"""Step programs over the paged KV cache (compiler/kv_cache.py) against the whole-window integer
graph, on the reference executor (compiler/refexec.py: the golden device model with every
conflicting pair of commands checked for ordering). No simulator."""
import functools
import os

import numpy as np
import pytest

from compiler import kv_cache as kc
from compiler import llm_model
from compiler.compile import compile_graph
from compiler.refexec import execute
from spec.capabilities import Capabilities

SEED = int(os.environ.get("SEED", "1"))
CAPS = Capabilities.default(8)


@functools.lru_cache(maxsize=None)
def _pack():
    return llm_model.load()


@functools.lru_cache(maxsize=None)
def _compiled(items, tokens, pages, blocks):
    return compile_graph(kc.step_graph(_pack(), items=items, tokens=tokens, pages=pages,
                                       blocks=blocks), CAPS)


class _Cache:
    """A pool in host bytes that persists across step launches (random bytes at the start: a
    page nobody wrote must not matter)."""

    def __init__(self, blocks, rng):
        self.layout = kc.KvLayout(llm_model.LAYERS, llm_model.D_MODEL, blocks)
        self.pool = rng.integers(0, 256, self.layout.pool_bytes, dtype=np.uint8).tobytes()

    def step(self, work, rows, tokens, pages):
        """``work``: per item (start, n, table); ``rows``: per item its n embedded rows."""
        cm = _compiled(len(work), tokens, pages, self.layout.blocks)
        params = kc.step_params(self.layout, work, items=len(work), tokens=tokens, pages=pages)
        x = np.stack([kc.pad_rows(r, tokens) for r in rows]).astype(np.int8)
        ins = cm.pack_inputs({cm.graph.inputs[0].name: x})
        ins[kc.POOL] = self.pool
        model, addr = execute(cm.program, CAPS, ins, params=params, seed=SEED)
        a = addr[kc.POOL]
        self.pool = bytes(model.host[a:a + self.layout.pool_bytes])
        out, = cm.unpack_outputs(lambda n, nb: bytes(model.host[addr[n]:addr[n] + nb])).values()
        return out


def _reference(ids):
    return _pack().logits(_pack().graph(len(ids)), ids)


def test_prefill_chunks_then_decode_across_pages():
    """A 13-token chunk (padded to 16: its padding rows write the sink page), a 17-token chunk
    crossing a page boundary (padded to 32), then decode steps into the third page: every row
    the logits of the whole-window graph."""
    print(f"SEED={SEED}")
    rng = np.random.default_rng(SEED)
    pack = _pack()
    ids = list(pack.vocab.encode("The compiler emits one command list per step."))[:36]
    emb = pack.embed(ids)[0]
    ref = _reference(ids)
    cache = _Cache(8, rng)
    table = [int(b) for b in rng.permutation(8)[:3]]
    out = cache.step([(0, 13, table)], [emb[:13]], 16, 1)
    assert np.array_equal(out[0, :13], ref[:13])
    out = cache.step([(13, 17, table)], [emb[13:30]], 32, 2)
    assert np.array_equal(out[0, :17], ref[13:30])
    for p in range(30, len(ids)):
        out = cache.step([(p, 1, table)], [emb[p:p + 1]], 1, 4)
        assert np.array_equal(out[0, 0], ref[p]), f"position {p}"


def test_decode_batch_of_sequences_at_different_positions():
    """Five sequences of different lengths decode together (one program, each item its own
    block table and mask offset); a sixth item pads the batch with a sequence of its own. Six
    attention tiles a layer: the later ones load into operand slots of the layer's earlier
    steps (their K as soon as that step's scores are done), checked by the hazard checker."""
    print(f"SEED={SEED}")
    rng = np.random.default_rng(SEED + 1)
    pack = _pack()
    texts = ["Kaki runs int8", "The driver", "Every wait has a timeout", "Q", "Pages of sixteen",
             "A"]
    seqs = [list(pack.vocab.encode(t)) for t in texts]
    refs = [_reference(s) for s in seqs]
    cache = _Cache(12, rng)
    blocks = [int(b) for b in rng.permutation(12)]
    tables = [blocks[2 * i:2 * i + 2] for i in range(len(seqs))]
    lengths = [len(s) - 1 for s in seqs]
    for s, n, table in zip(seqs, lengths, tables):       # prefill all but the last token
        if n:
            out = cache.step([(0, n, table)], [pack.embed(s)[0, :n]], 32, 2)
            assert np.array_equal(out[0, :n], _reference(s)[:n])
    work = [(n, 1, t) for n, t in zip(lengths, tables)]
    rows = [pack.embed(s)[0, n:n + 1] for s, n in zip(seqs, lengths)]
    notes = [c.note for c in _compiled(len(work), 1, 2, 12).program.commands]
    assert any("K slot of step" in n for n in notes)
    out = cache.step(work, rows, 1, 2)
    for i, (r, n) in enumerate(zip(refs, lengths)):
        assert np.array_equal(out[i, 0], r[n]), f"item {i}"


def test_step_params_name_what_is_wrong():
    layout = kc.KvLayout(2, 128, 4)
    with pytest.raises(ValueError, match="block outside 0..3"):
        kc.step_params(layout, [(0, 1, [4])], items=1, tokens=1, pages=1)
    with pytest.raises(ValueError, match="does not cover position 16"):
        kc.step_params(layout, [(16, 1, [0])], items=1, tokens=1, pages=2)
    with pytest.raises(ValueError, match="do not fit a program of 1 tokens x 1 pages"):
        kc.step_params(layout, [(16, 1, [0, 1])], items=1, tokens=1, pages=1)
    with pytest.raises(ValueError, match="2 work items for a program of 1"):
        kc.step_params(layout, [(0, 1, [0]), (0, 1, [1])], items=1, tokens=1, pages=1)
