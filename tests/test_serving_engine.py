"""The serving runtime end to end on the NumPy reference executor: the invariants of issue 15
item 4 (docs/serving.md "Invariants").

* every request's tokens equal the same request served alone (and ``pack.greedy``), whatever the
  batch composition, arrival interleaving, chunking, preemption, prefix sharing or poison
  (seeded random arrival traces on a small cache; SEED= reruns them, the seed is printed);
* block tables, reference counts, conservation, poison before reuse: checked before and after
  every step (``Engine(check_invariants=True)``);
* chunked prefill == unchunked, preemption + recompute == uninterrupted, decodes before
  prefill chunks, the newest request is the victim;
* streams deliver in order, exactly once, and end: on EOS, max tokens, cancel (also cancelled
  in the step it finishes: no double free), executor error, engine stop;
* the context limit and other bad requests are rejected with the numbers.
"""
import asyncio
import os
import random

import numpy as np
import pytest

from compiler import llm_model
from serving import invariants
from serving.engine import ContextLimitError, Engine, RequestFailed, sample
from serving.executor import ReferenceExecutor
from serving.kv_blocks import InvariantError, blocks_for
from serving.scheduler import SamplingParams, chunk_len
from serving.traces import TraceRequest, random_trace, run_trace, serve_alone

SEED = int(os.environ.get("SEED") or random.SystemRandom().randrange(1, 2**31))
TEXT = ("Kaki is an open spatial AI accelerator together with the stack that drives it and the "
        "testbench that proves them right together. The compiler turns a graph of int8 ops into "
        "a command program; the host driver submits it to the hardware queues, and the chip's "
        "issue unit hands every command to the DMA, the PE array or the vector unit.")
MAX_NEW = 16


def _note():
    print(f"[serving engine] SEED={SEED} (rerun: SEED={SEED} .venv/bin/python -m pytest -q "
          f"tests/test_serving_engine.py)")


@pytest.fixture(scope="module")
def pack():
    return llm_model.load()


@pytest.fixture(scope="module")
def corpus(pack):
    return pack.vocab.encode(TEXT)


@pytest.fixture(scope="module")
def alone(pack):
    """prompt -> the first MAX_NEW greedy tokens of the prompt served alone (memoized)."""
    memo = {}

    def get(prompt, max_tokens=MAX_NEW, eos=None):
        key = tuple(int(t) for t in prompt)
        if key not in memo:
            eng = Engine(ReferenceExecutor(pack, 32), check_invariants=True)
            memo[key] = asyncio.run(serve_alone(eng, key, MAX_NEW))
        out = memo[key][:max_tokens]
        if eos is not None and eos in out:
            out = out[:out.index(eos) + 1]
        return out
    return get


def _engine(pack, num_blocks, **kw):
    seed = kw.pop("poison_seed", 0)
    poison = kw.pop("poison", "random")
    ex = ReferenceExecutor(pack, num_blocks, seed=seed, poison=poison)
    return Engine(ex, check_invariants=True, **kw)


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


class Recorder:
    """An executor wrapper recording every step's work (and optionally acting during it)."""

    def __init__(self, inner, during=None):
        self.inner, self.during, self.steps = inner, during, []
        for k in ("page_tokens", "num_blocks", "max_batch", "max_step_tokens", "context",
                  "vocab_size", "logit_scale"):
            setattr(self, k, getattr(inner, k))

    async def step(self, work):
        self.steps.append([(w.seq_id, w.start, len(w.tokens), w.want_logits) for w in work])
        if self.during is not None:
            self.during(len(self.steps) - 1, work)
        return await self.inner.step(work)

    async def poison(self, blocks):
        return await self.inner.poison(blocks)


# ------------------------------------------------------------------------------ equality
def test_engine_equals_pack_greedy(pack):
    """The engine (chunks of 5, then decodes) gives the tokens of docs/llm.md's reference."""
    eng = _engine(pack, 8, max_step_tokens=5, vocab=pack.vocab)
    stream = eng.submit("The compiler", 20)
    _run(eng.run_until_idle())
    got = _run(stream.collect())
    assert "The compiler" + pack.vocab.decode(got) == pack.greedy("The compiler", 20, seq=32)
    assert stream.finish_reason == "length"


def test_random_traces_equal_each_request_alone(pack, corpus, alone):
    """Seeded random arrival traces (shared prefixes, cancels, EOS) on small caches, token
    budgets and batches: every request's tokens equal the same request served alone; every
    invariant holds before and after every step; preemptions happen."""
    _note()
    rng = np.random.default_rng(SEED)
    eos_ids = [int(t) for t in pack.vocab.encode(" e")]
    preemptions = 0
    for k in range(3):
        trace = random_trace(rng, corpus, requests=6, max_prompt=48, max_tokens=MAX_NEW,
                             steps=10, eos_ids=eos_ids)
        need = max(blocks_for(len(t.prompt) + t.max_tokens - 1) for t in trace)
        num_blocks = need + int(rng.integers(0, 4))
        budget = int(rng.integers(4, 65))
        batch = int(rng.integers(2, 9))
        poison = ("random", 0x00, 0x7F)[k]
        eng = _engine(pack, num_blocks, max_step_tokens=budget, max_batch=batch,
                      poison=poison, poison_seed=int(rng.integers(2**31)))
        streams = _run(run_trace(eng, trace))
        where = (f"trace {k} (blocks {num_blocks}, budget {budget}, batch {batch}, "
                 f"SEED={SEED})")
        for t, s in zip(trace, streams):
            _run(s.collect())
            invariants.check_stream(s)
            want = alone(t.prompt, t.max_tokens, t.eos)
            if s.finish_reason == "cancelled":
                assert t.cancel_at is not None
                invariants.check_same_tokens(s.tokens, want[:len(s.tokens)], f"{where}: ")
            else:
                assert s.finish_reason == ("eos" if t.eos is not None and want[-1] == t.eos
                                           and (t.eos in want) else "length"), where
                invariants.check_same_tokens(s.tokens, want, f"{where} request "
                                             f"{s.request_id}: ")
        assert eng.blocks.num_used == 0, where
        preemptions += eng.summary()["preemptions"]
        print(where, eng.report().replace("\n", "; "))
    # a tight trace makes sure preemption is exercised whatever the seed: two 32-token prompts
    # first (each needs a third block at its first decode, the cache has one left, so the newer
    # is preempted), then random ones
    trace = [TraceRequest(0, tuple(int(t) for t in corpus[k:k + 32]), 4) for k in (0, 7)] + \
        random_trace(rng, corpus, requests=3, max_prompt=40, max_tokens=MAX_NEW, steps=2,
                     cancel=0.0, shared_prefix=0.0)
    need = max(blocks_for(len(t.prompt) + t.max_tokens - 1) for t in trace)
    eng = _engine(pack, max(need, 5), max_step_tokens=32, prefix_caching=False)
    streams = _run(run_trace(eng, trace))
    for t, s in zip(trace, streams):
        invariants.check_same_tokens(_run(s.collect()), alone(t.prompt, t.max_tokens),
                                     "tight trace: ")
    assert eng.summary()["preemptions"] > 0, "the tight trace did not preempt"
    print(f"preemptions: {preemptions} in the random traces")


def test_chunked_prefill_equals_unchunked_and_follows_the_rule(pack, corpus, alone):
    prompt = corpus[:70]
    want = alone(prompt, 6)
    firsts = {}
    for budget, max_chunk in ((256, None), (33, None), (16, None), (7, None), (256, 20)):
        rec = Recorder(ReferenceExecutor(pack, 8))
        eng = Engine(rec, max_step_tokens=budget, check_invariants=True, max_chunk=max_chunk)
        s = eng.submit(prompt, 6)
        _run(eng.run_until_idle())
        assert _run(s.collect()) == want, f"budget {budget}"
        firsts[budget, max_chunk] = [st[0][1:3] for st in rec.steps]
    firsts = {b: v for (b, c), v in firsts.items() if c is None} | {"chunk20": firsts[256, 20]}
    assert firsts[256][0] == (0, 70)
    assert firsts[33][:3] == [(0, 32), (32, 32), (64, 6)]   # ends on 16-token boundaries
    assert firsts[16][:5] == [(0, 16), (16, 16), (32, 16), (48, 16), (64, 6)]
    assert firsts[7][:4] == [(0, 7), (7, 7), (14, 2), (16, 7)]
    assert firsts["chunk20"][:5] == [(0, 16), (16, 16), (32, 16), (48, 16), (64, 6)]
    assert [chunk_len(c, r, b) for c, r, b in
            ((0, 5, 8), (0, 40, 20), (10, 40, 20), (10, 40, 5), (17, 100, 15))] == \
        [5, 16, 6, 5, 15]


def test_decodes_go_first_then_prefill_fills_the_budget(pack, corpus, alone):
    rec = Recorder(ReferenceExecutor(pack, 16))
    eng = Engine(rec, max_step_tokens=8, check_invariants=True)
    a = eng.submit(corpus[:5], 10)
    _run(eng.step())                                   # a: prefill of 5, first token
    b = eng.submit(corpus[20:60], 3)
    st = _run(eng.step())
    assert rec.steps[-1] == [(a.request_id, 5, 1, True), (b.request_id, 0, 7, False)]
    assert (st.decode_tokens, st.prefill_tokens, st.batch) == (1, 7, 2)
    _run(eng.run_until_idle())
    assert _run(a.collect()) == alone(corpus[:5], 10)
    assert _run(b.collect()) == alone(corpus[20:60], 3)


def test_preemption_recompute_gives_the_same_tokens_and_takes_the_newest(pack, corpus, alone):
    prompts = [corpus[0:20], corpus[30:50], corpus[60:80]]
    eng = _engine(pack, 6, max_step_tokens=64)       # each needs 3 blocks at its end
    streams = [eng.submit(p, MAX_NEW) for p in prompts]
    order = []
    orig = eng.scheduler.preempt

    def spy(req):
        order.append((req.rid, sorted(r.rid for r in eng.scheduler.running)))
        orig(req)
    eng.scheduler.preempt = spy
    _run(eng.run_until_idle())
    assert order, "no preemption: the cache was expected to run out"
    for rid, running in order:
        assert rid == max(running), f"victim {rid} is not the newest of {running}"
    for p, s in zip(prompts, streams):
        invariants.check_same_tokens(_run(s.collect()), alone(p), "preempted: ")
    summ = eng.summary()
    assert summ["recompute_tokens"] > 0 and summ["preemptions"] == len(order)
    assert streams[0].request.preemptions == 0 and streams[2].request.preemptions > 0


def test_prefix_sharing_between_requests(pack, corpus, alone):
    """A request whose first 32 tokens are another's computed blocks shares them (reference
    count 2 while both run), computes only the rest, and gives its own tokens."""
    p1 = corpus[:40]
    p2 = np.concatenate([corpus[:32], corpus[100:110]])
    shared_seen = []
    for caching in (True, False):
        eng = _engine(pack, 12, prefix_caching=caching,
                      on_step=lambda e, st: shared_seen.append(
                          max((e.blocks.refcount(b) for b in range(e.blocks.total)), default=0)))
        s1 = eng.submit(p1, 4)
        _run(eng.step())
        s2 = eng.submit(p2, 4)
        _run(eng.run_until_idle())
        assert _run(s1.collect()) == alone(p1, 4)
        assert _run(s2.collect()) == alone(p2, 4)
        assert s2.request.cached_tokens == (32 if caching else 0)
        assert (eng.blocks.counters["prefix_hits"] > 0) == caching
        assert (max(shared_seen) == 2) == caching
        shared_seen.clear()


# ------------------------------------------------------------------------------ streams
def test_streams_in_order_exactly_once_and_terminate(pack, corpus, alone):
    """Background loop; consumers read at their own pace while requests arrive; one cancels
    after 3 tokens; every stream ends; each consumer saw exactly its request's tokens."""
    async def main():
        eng = _engine(pack, 10, max_step_tokens=24)
        rng = np.random.default_rng(SEED + 7)

        async def consume(stream, cancel_after=None):
            got = []
            async for t in stream:
                got.append(t)
                if cancel_after is not None and len(got) == cancel_after:
                    stream.cancel()
                await asyncio.sleep(float(rng.random()) * 0.002)
            return got
        async with eng:
            tasks = []
            for i in range(5):
                s = eng.submit(corpus[i * 9:i * 9 + 10 + 3 * i], 12)
                tasks.append((s, asyncio.create_task(consume(s, 3 if i == 2 else None))))
                await asyncio.sleep(0.01)
            results = [(s, await t) for s, t in tasks]
        return eng, results
    eng, results = _run(main())
    for i, (s, got) in enumerate(results):
        invariants.check_stream(s)
        assert got == s.tokens
        want = alone(s.request.prompt, 12)
        if i == 2:
            assert s.finish_reason == "cancelled" and 3 <= len(got) < 12
            assert got == want[:len(got)]
        else:
            assert s.finish_reason == "length" and got == want
        assert _run(s.collect()) == []                  # stays ended
    assert eng.blocks.num_used == 0


def test_cancel_in_the_step_it_finishes_frees_once(pack, corpus, alone):
    """The client cancels while the step that generates the request's last token runs: the
    request ends once (cancelled, that token not delivered), its blocks are freed once; cancels
    of a waiting request, of a finished one and a second cancel do nothing wrong."""
    streams = {}

    def during(i, work):
        for w in work:
            req = streams["a"].request
            if w.seq_id == req.rid and w.want_logits and len(req.output) == req.max_tokens - 1:
                streams["a"].cancel()
                streams["a"].cancel()
    rec = Recorder(ReferenceExecutor(pack, 8), during)
    eng = Engine(rec, max_step_tokens=32, max_batch=1, check_invariants=True)
    streams["a"] = eng.submit(corpus[:12], 5)
    streams["w"] = eng.submit(corpus[5:30], 5)       # waits behind a (batch of 1)
    streams["w"].cancel()
    assert streams["w"].closed and streams["w"].finish_reason == "cancelled"
    streams["b"] = eng.submit(corpus[40:50], 3)
    _run(eng.run_until_idle())
    a = streams["a"]
    assert a.finish_reason == "cancelled"
    assert _run(a.collect()) == alone(corpus[:12], 4)   # the 5th was dropped
    assert _run(streams["w"].collect()) == []
    assert _run(streams["b"].collect()) == alone(corpus[40:50], 3)
    streams["b"].cancel()                               # finished: nothing happens
    assert streams["b"].finish_reason == "length"
    assert eng.blocks.num_used == 0 and eng.blocks.counters["freed_seqs"] == 2


def test_eos_and_max_tokens_end_the_stream(pack, corpus, alone):
    want = alone(corpus[:15])
    eos = want[3]
    eng = _engine(pack, 8)
    s1 = eng.submit(corpus[:15], MAX_NEW, eos=eos)
    s2 = eng.submit(corpus[:15], 2)
    _run(eng.run_until_idle())
    assert _run(s1.collect()) == want[:want.index(eos) + 1] and s1.finish_reason == "eos"
    assert _run(s2.collect()) == want[:2] and s2.finish_reason == "length"


def test_executor_error_ends_the_requests_in_that_step(pack, corpus, alone):
    class Failing(Recorder):
        async def step(self, work):
            if len(self.steps) == 2 and any(w.seq_id == 1 for w in work):
                self.steps.append("failed")
                raise RuntimeError("device lost")
            return await super().step(work)
    eng = Engine(Failing(ReferenceExecutor(pack, 8)), max_batch=1, max_step_tokens=64,
                 check_invariants=True)
    s0 = eng.submit(corpus[:10], 2)
    s1 = eng.submit(corpus[10:20], 4)
    s2 = eng.submit(corpus[20:30], 3)
    _run(eng.run_until_idle())
    assert _run(s0.collect()) == alone(corpus[:10], 2)
    with pytest.raises(RequestFailed, match="device lost"):
        _run(s1.collect())
    assert s1.finish_reason == "error" and s1.closed
    assert _run(s2.collect()) == alone(corpus[20:30], 3)
    assert eng.blocks.num_used == 0


def test_stop_aborts_unfinished_requests(pack, corpus):
    async def main():
        eng = _engine(pack, 16)
        eng.submit(corpus[:10], 3)           # queued before the loop starts
        s = eng.submit(corpus[:20], 200)
        eng.start()
        while len(s.request.output) < 2:
            await asyncio.sleep(0.001)
        await eng.stop()
        return s, await s.collect()
    s, got = _run(main())
    assert s.finish_reason == "aborted" and 2 <= len(got) < 200


# ------------------------------------------------------------------------------ requests
def test_bad_requests_are_rejected_with_the_numbers(pack, corpus):
    eng = _engine(pack, 4)
    with pytest.raises(ContextLimitError, match=r"250 tokens \+ max_tokens 10 = 260 exceeds the "
                                                r"context of 256"):
        eng.submit(np.zeros(250, np.int64), 10)
    with pytest.raises(ContextLimitError, match="needs 5 KV blocks; the cache has 4"):
        eng.submit(corpus[:60], 10)
    with pytest.raises(ValueError, match="non-empty"):
        eng.submit(np.zeros(0, np.int64), 3)
    with pytest.raises(ValueError, match="outside 0..95"):
        eng.submit(np.array([96]), 3)
    with pytest.raises(ValueError, match="max_tokens = 0"):
        eng.submit(corpus[:3], 0)
    with pytest.raises(ValueError, match="vocab"):
        eng.submit("text", 3)
    assert not eng.has_work()


def test_sampling_is_seeded_per_request(pack, corpus):
    """Temperature/top-k draws come from the request's own generator: the same tokens alone
    and batched with others (and greedy breaks ties to the lowest id)."""
    def run(others):
        eng = _engine(pack, 16, max_step_tokens=16)
        for i in range(others):
            eng.submit(corpus[i * 7:i * 7 + 9], 6, temperature=1.0)
        s = eng.submit(corpus[:12], 8, temperature=0.7, top_k=5, seed=1234)
        _run(eng.run_until_idle())
        return _run(s.collect())
    assert run(0) == run(3)
    assert sample(np.array([3, 7, 7, -1], np.int8), SamplingParams(), None) == 1
    rng = np.random.default_rng(0)
    draws = {sample(np.array([0, 50, 50, -100], np.int8), SamplingParams(1.0, 2), rng, 1.0)
             for _ in range(50)}
    assert draws == {1, 2}


def test_statistics_and_report(pack, corpus):
    eng = _engine(pack, 8, max_step_tokens=16)
    for i in range(3):
        eng.submit(corpus[i * 10:i * 10 + 20], 4)
    _run(eng.run_until_idle())
    s = eng.summary()
    assert s["tokens"] == s["prefill_tokens"] + s["recompute_tokens"] + s["decode_tokens"]
    assert s["prefill_tokens"] == 60 and s["decode_tokens"] == 9
    assert 0 < s["mean_occupancy"] <= 1 and s["finished"]["length"] == 3
    assert all(st.tokens <= 16 and st.batch <= 8 for st in eng.stats)
    assert "batch occupancy" in eng.report() and len(eng.step_table()) == s["steps"]


def test_check_before_step_catches_unpoisoned_reuse(pack, corpus):
    eng = _engine(pack, 2)
    eng.submit(corpus[:20], 2)
    _run(eng.run_until_idle())
    eng.submit(corpus[50:70], 2)                       # same blocks, other content
    out = eng.scheduler.schedule()
    work = [eng._work(it) for it in out.items]
    assert eng.blocks.pending_poison()
    with pytest.raises(InvariantError, match="without poison"):
        invariants.check_before_step(eng, work)


def test_a_broken_invariant_stops_the_run_and_ends_every_stream(pack, corpus):
    """A runtime bug (here: a reference count corrupted after a step) is not an executor error:
    run_until_idle raises the InvariantError and every live stream ends with it."""
    def corrupt(eng, st):
        if st.step == 1:
            eng.blocks._ref[eng.blocks.table(0)[0]] += 1
    eng = _engine(pack, 8, on_step=corrupt)
    streams = [eng.submit(corpus[i * 10:i * 10 + 12], 5) for i in range(3)]
    with pytest.raises(InvariantError, match="reference count"):
        _run(eng.run_until_idle())
    for s in streams:
        assert s.closed and s.finish_reason == "error"
        with pytest.raises(RequestFailed):
            _run(s.collect())


def test_poll_reads_a_stream_without_waiting(pack, corpus, alone):
    """A caller stepping the engine itself reads each step's tokens with poll()."""
    eng = _engine(pack, 8, max_step_tokens=8)
    s = eng.submit(corpus[:20], 5)
    got = []
    assert s.poll() == [] and not s.done
    while eng.has_work():
        _run(eng.step())
        new = s.poll()
        assert len(new) <= 1
        got += new
    assert s.done and s.poll() == [] and got == s.tokens == alone(corpus[:20], 5)
