"""The NumPy reference executor (serving/executor.py) is bit-exact with the whole-window integer
interpreter (``pack.logits``, the reference of docs/llm.md) whatever the chunking, the block
table, the batch around a sequence and the poison in the cache; and it rejects malformed steps.
Seeded (SEED= reruns; the seed is printed)."""
import asyncio
import os
import random

import numpy as np
import pytest

from compiler import llm_model
from serving.executor import Executor, ReferenceExecutor, SeqWork, node_graph
from serving.kv_blocks import PAGE_TOKENS, blocks_for

SEED = int(os.environ.get("SEED") or random.SystemRandom().randrange(1, 2**31))
TEXT = ("The compiler turns a graph of int8 ops into a program for the chip: fused, tiled and "
        "double-buffered across three queues ordered by events. The driver opens a device.")


@pytest.fixture(scope="module")
def pack():
    return llm_model.load()


@pytest.fixture(scope="module")
def whole(pack):
    """logits of every position of TEXT's first 64 tokens, through the whole-window graph."""
    ids = pack.vocab.encode(TEXT)[:64]
    return ids, pack.logits(pack.graph(64), ids)


def _note():
    print(f"[serving executor] SEED={SEED} (rerun: SEED={SEED} .venv/bin/python -m pytest -q "
          f"tests/test_serving_executor.py)")


def _chunks(rng, n, max_chunk):
    out, pos = [], 0
    while pos < n:
        c = int(rng.integers(1, max_chunk + 1))
        out.append((pos, min(c, n - pos)))
        pos += c
    return out


def test_protocol_and_attributes(pack):
    ex = ReferenceExecutor(pack, 8)
    assert isinstance(ex, Executor)
    assert (ex.page_tokens, ex.num_blocks, ex.max_batch, ex.context) == (PAGE_TOKENS, 8, 8, 256)
    assert ex.kv.shape == (2, 2, 8, 16, 128) and ex.kv.dtype == np.int8


def test_chunked_paged_steps_equal_the_whole_window(pack, whole):
    """Random chunkings (1 token = decode .. 40), random physical blocks, the other positions
    of the cache full of random bytes: every chunk's last logits equal the whole-window row."""
    _note()
    ids, ref = whole
    rng = np.random.default_rng(SEED)
    for _ in range(3):
        ex = ReferenceExecutor(pack, 12, seed=int(rng.integers(2**31)))
        table = tuple(int(b) for b in rng.permutation(12)[:blocks_for(len(ids))])
        for start, n in _chunks(rng, len(ids), 40):
            out, = asyncio.run(ex.step([SeqWork(0, ids[start:start + n], start, table, True)]))
            np.testing.assert_array_equal(out, ref[start + n - 1],
                                          err_msg=f"chunk {start}..{start + n - 1}")


def test_a_batch_equals_each_sequence_alone(pack, whole):
    """Four sequences (prefill chunks and decodes mixed) in one step give each one's own
    logits; want_logits False gives None."""
    ids, ref = whole
    rng = np.random.default_rng(SEED + 1)
    other = pack.vocab.encode("Kaki is an open spatial AI accelerator with its stack")
    ref2 = pack.logits(pack.graph(64), other)
    ex = ReferenceExecutor(pack, 16, seed=SEED % 1000)
    perm = [int(b) for b in rng.permutation(16)]
    t0, t1, t2, t3 = (tuple(perm[i * 4:(i + 1) * 4]) for i in range(4))
    # first: prefill of 20 / 35 / 10 / 17 positions, one step
    first = [SeqWork(10, ids[:20], 0, t0[:2], True), SeqWork(11, other[:35], 0, t1[:3], True),
             SeqWork(12, ids[:10], 0, t2[:1], False), SeqWork(13, other[:17], 0, t3[:2], True)]
    out = asyncio.run(ex.step(first))
    np.testing.assert_array_equal(out[0], ref[19])
    np.testing.assert_array_equal(out[1], ref2[34])
    assert out[2] is None
    np.testing.assert_array_equal(out[3], ref2[16])
    # then a decode, a decode, a 30-token chunk crossing two block boundaries, a decode
    second = [SeqWork(10, ids[20:21], 20, t0[:2], True), SeqWork(11, other[35:36], 35, t1[:3], True),
              SeqWork(12, ids[10:40], 10, t2[:3], True), SeqWork(13, other[17:18], 17, t3[:2], True)]
    out = asyncio.run(ex.step(second))
    for o, r in zip(out, (ref[20], ref2[35], ref[39], ref2[17])):
        np.testing.assert_array_equal(o, r)


def test_poison_never_reaches_a_result(pack, whole):
    """Between steps every block outside the sequence's table is poisoned, and so are (by
    direct writes) the slots of its last block after its last position: the logits do not
    change. Poisoning blocks the sequence holds does change them (the test can see poison)."""
    ids, ref = whole
    rng = np.random.default_rng(SEED + 2)
    ex = ReferenceExecutor(pack, 10, seed=int(rng.integers(2**31)))
    table = (7, 2, 9, 4)
    for start, n in _chunks(rng, len(ids), 13):
        asyncio.run(ex.poison([b for b in range(10) if b not in table]))
        end = start + n
        last, slot = table[(end - 1) // 16], (end - 1) % 16 + 1
        ex.kv[:, :, last, slot:] = rng.integers(-128, 128, ex.kv[:, :, last, slot:].shape,
                                                dtype=np.int8)
        for b in table[blocks_for(end):]:
            ex.kv[:, :, b] = rng.integers(-128, 128, ex.kv[:, :, b].shape, dtype=np.int8)
        out, = asyncio.run(ex.step([SeqWork(0, ids[start:end], start, table, True)]))
        np.testing.assert_array_equal(out, ref[end - 1])
    asyncio.run(ex.poison([table[0]]))
    out, = asyncio.run(ex.step([SeqWork(0, ids[63:64], 63, table, True)]))
    assert not np.array_equal(out, ref[63]), "poisoning a live block should be visible"


def test_fixed_poison_byte(pack):
    ex = ReferenceExecutor(pack, 3, poison=0xA5)
    assert (ex.kv.view(np.uint8) == 0xA5).all()
    ex.kv[:] = 0
    asyncio.run(ex.poison([1]))
    assert (ex.kv[:, :, 1].view(np.uint8) == 0xA5).all() and not ex.kv[:, :, [0, 2]].any()


def test_malformed_steps_are_rejected(pack):
    ex = ReferenceExecutor(pack, 4, max_batch=2, max_step_tokens=40)
    ids = np.arange(5, dtype=np.int64)

    def bad(work, match):
        with pytest.raises(ValueError, match=match):
            asyncio.run(ex.step(work))
    bad([], "empty step")
    bad([SeqWork(i, ids[:1], 0, (i,), True) for i in range(3)], "at most 2")
    bad([SeqWork(0, np.arange(41) % 5, 0, (0, 1, 2), True)], "budget is 40")
    bad([SeqWork(0, ids, 14, (0,), True)], "does not cover")
    bad([SeqWork(0, ids, 0, (4,), True)], "outside the cache")
    bad([SeqWork(0, ids, 254, (0,) * 17, True)], r"outside 0..255")
    bad([SeqWork(0, ids[:2], 0, (1,), True), SeqWork(1, ids[:1], 1, (1,), True)],
        "both write block 1 slot 1")
    bad([SeqWork(0, ids[:1], 0, (0,), True), SeqWork(0, ids[:1], 1, (0,), True)], "twice")
    bad([SeqWork(0, np.array([96]), 0, (0,), True)], "token ids outside")
    with pytest.raises(ValueError, match="does not act per position"):
        g = pack.graph(16)
        g.nodes[1].op = "maxred"
        ReferenceExecutor(pack, 4, graph=g)


def test_node_graph_is_the_node_alone(pack):
    """A per-node graph interprets to the same rows as the node inside the whole graph."""
    from compiler.graph import interpret
    g = pack.graph(8)
    ids = pack.vocab.encode("abcdefgh")
    x = pack.embed(ids, 8)
    node = next(n for n in g.nodes if n.op == "rms_norm")
    one = node_graph(node, [(1, 8, 128)], (1, 8, 128))
    got = interpret(one, {"x": x})[node.name]
    g.outputs = [node.output]
    np.testing.assert_array_equal(got, interpret(g, {"x": x})[node.name])
