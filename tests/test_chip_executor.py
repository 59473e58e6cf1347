"""The chip executor (serving/chip_executor.py) through the driver, the firmware (on the RV32
ISS) and the golden chip model: step programs recorded as command lists over the paged KV cache,
every returned logit row equal to the whole-window integer graph's. No simulator."""
import asyncio
import functools
import os

import numpy as np
import pytest

from compiler import llm_model
from driver.device import Device
from firmware import build as fw_build
from golden.backend import GoldenBackend
from golden.chip_model import ChipModel
from serving.chip_executor import ChipExecutor, PerfProbe
from serving.executor import SeqWork
from spec.capabilities import Capabilities
from spec.firmware_image import FirmwareImage

SEED = int(os.environ.get("SEED", "3"))
HOST_BASE = 0x1000


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return FirmwareImage.from_elf(fw_build.build(tmp_path_factory.mktemp("fw") / "kaki_fw.elf"))


@functools.lru_cache(maxsize=None)
def _pack():
    return llm_model.load()


def _run(image, body, host_bytes=0xF0000, **kw):
    async def go():
        chip = ChipModel(Capabilities.default(8), host_bytes=HOST_BASE + host_bytes, seed=SEED,
                         engine_delay=(1, 40))
        backend = GoldenBackend(chip)
        dev = await Device.open(backend, host_base=HOST_BASE, host_bytes=host_bytes,
                                firmware=image)
        ex = await ChipExecutor.open(dev, _pack(), probe=PerfProbe(backend),
                                     **kw)
        return await body(ex)
    return asyncio.run(go())


def _reference(ids):
    return _pack().logits(_pack().graph(len(ids)), ids)


def test_mixed_steps_match_the_whole_window_graph(image):
    """Two prompts prefilled in chunks (one crossing a page boundary, padded to a power of two)
    in the same steps as the other's decodes, block tables scattered over the cache."""
    print(f"SEED={SEED}")
    pack = _pack()
    a = list(pack.vocab.encode("The queue controller fetches"))          # 28 tokens
    b = list(pack.vocab.encode("Every wait"))
    ra, rb = _reference(a), _reference(b)
    rng = np.random.default_rng(SEED)
    blocks = [int(x) for x in rng.permutation(10)]
    ta, tb = tuple(blocks[:2]), tuple(blocks[2:3])

    async def body(ex):
        got = await ex.step([SeqWork(0, np.array(a[:12]), 0, ta[:1], False),
                             SeqWork(1, np.array(b[:9]), 0, tb, True)])
        assert got[0] is None and np.array_equal(got[1], rb[8])
        got = await ex.step([SeqWork(1, np.array(b[9:10]), 9, tb, True),
                             SeqWork(0, np.array(a[12:20]), 12, ta, True)])
        assert np.array_equal(got[0], rb[9]) and np.array_equal(got[1], ra[19])
        for p in range(20, len(a)):
            got, = await ex.step([SeqWork(0, np.array(a[p:p + 1]), p, ta, True)])
            assert np.array_equal(got, ra[p]), f"position {p}"
        kinds = [(s.kind, s.items, s.tokens, s.pages) for s in ex.launches]
        assert kinds[:4] == [("prefill", 1, 16, 1), ("prefill", 1, 16, 1), ("decode", 1, 1, 1),
                             ("prefill", 1, 8, 2)]
        assert all(s.cycles > 0 for s in ex.launches)
    _run(image, body, num_blocks=10)


def test_shapes_evicted_when_memory_runs_short_and_poison_is_harmless(image):
    """A device memory that holds the weights, the cache and about two program shapes: shapes
    are freed least recently used first and recorded again, and a poisoned unused block changes
    nothing."""
    pack = _pack()
    seqs = [list(pack.vocab.encode(t)) for t in ("Kaki runs", "The driver writes", "A")]
    refs = [_reference(s) for s in seqs]

    async def body(ex):
        for k, s in enumerate(seqs):           # three shapes: prefill 16/1, 32/2 and 1/1
            n = len(s) - 1 or 1
            table = (2 * k, 2 * k + 1)
            if len(s) > 1:
                got, = await ex.step([SeqWork(k, np.array(s[:n]), 0, table, True)])
                assert np.array_equal(got, refs[k][n - 1])
            await ex.poison([7])
            got, = await ex.step([SeqWork(k, np.array(s[n:n + 1] if len(s) > 1 else s),
                                          n if len(s) > 1 else 0, table, True)])
            assert np.array_equal(got, refs[k][len(s) - 1])
        assert len(ex._shapes) < len({(s.items, s.tokens, s.pages) for s in ex.launches})
    _run(image, body, host_bytes=0xB0000, num_blocks=8)


def test_bad_work_is_refused_before_anything_runs(image):
    async def body(ex):
        with pytest.raises(ValueError, match="outside the cache's blocks"):
            await ex.step([SeqWork(0, np.array([1]), 0, (9,), True)])
        with pytest.raises(ValueError, match="chunks of at most 64"):
            await ex.step([SeqWork(0, np.arange(65) % 50, 0, tuple(range(5)), True)])
        with pytest.raises(ValueError, match="poison of block 8"):
            await ex.poison([8])
        assert ex.launches == []
    _run(image, body, num_blocks=8, max_step_tokens=128)


def test_random_trace_on_the_golden_chip_equals_each_request_alone(image):
    """The serving runtime unchanged over the chip executor on the golden chip: a seeded arrival
    trace with shared prefixes, cancels and a cache small enough to preempt; every step checked
    by the invariants, every request's tokens equal to the request alone on the NumPy
    reference (a cancelled one: a prefix of them)."""
    from serving import invariants, traces
    from serving.engine import Engine
    from serving.executor import ReferenceExecutor
    from serving.kv_blocks import blocks_for

    print(f"SEED={SEED}")
    pack = _pack()
    rng = np.random.default_rng(SEED)
    corpus = pack.vocab.encode("The driver writes descriptors into a ring in host memory and "
                               "rings the doorbell; the queue controller fetches them.")
    trace = traces.random_trace(rng, corpus, requests=3, max_prompt=40, max_tokens=3, steps=1,
                                cancel=0.3, shared_prefix=0.5)
    # and two 32-token prompts arriving first: each needs a third block at its first decode,
    # the cache has one left, so the newer one is preempted whatever the seed
    trace = [traces.TraceRequest(0, tuple(int(t) for t in corpus[k:k + 32]), 4)
             for k in (0, 7)] + trace
    blocks = 5

    async def body(ex):
        eng = Engine(ex, check_invariants=True, max_step_tokens=32)
        streams = await traces.run_trace(eng, trace)
        assert eng.blocks.num_used == 0
        return [s.poll() for s in streams], streams, eng.summary()
    got, streams, summary = _run(image, body, num_blocks=blocks, max_step_tokens=32,
                                 max_chunk=32)

    async def alone(t):
        eng = Engine(ReferenceExecutor(pack, blocks, max_step_tokens=32), max_step_tokens=32)
        return await traces.serve_alone(eng, t.prompt, t.max_tokens, t.eos)
    for i, (t, s, tokens) in enumerate(zip(trace, streams, got)):
        invariants.check_stream(s)
        want = asyncio.run(alone(t))
        if s.finish_reason == "cancelled":
            want = want[:len(tokens)]
        invariants.check_same_tokens(tokens, want, f"request {i} (SEED={SEED}): ")
    print(summary)
    assert summary["preemptions"] > 0
