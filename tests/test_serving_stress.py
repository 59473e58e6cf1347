"""The serving runtime under many random traces, on a token-level executor instead of the model:
``TokenExecutor`` keeps a cache of token ids per (block, slot), writes each step's tokens at
their (block, slot) — failing when the slot is not poison (a block reused without poison, or a
position written twice) — reads every position ``0 .. last`` back through the block table —
failing on poison (a position never written, a wrong table) — and derives the logits from the
tokens it read (a hash of the prefix). So any wrong table, sharing, position, chunk or recompute
changes the tokens, and the expected tokens of a request are computed directly from its prompt.
Hundreds of traces (arrivals, cancels also during a step, EOS, prefix sharing, tiny caches that
force preemption, executor failures) in a few seconds; every invariant checked around every step.
Seeded: SEED= reruns (the seed is printed)."""
import asyncio
import hashlib
import os
import random

import numpy as np

from serving import invariants
from serving.engine import Engine
from serving.executor import check_work
from serving.kv_blocks import blocks_for
from serving.traces import TraceRequest, run_trace

SEED = int(os.environ.get("SEED") or random.SystemRandom().randrange(1, 2**31))
VOCAB, POISON = 12, -1


class InjectedFailure(RuntimeError):
    pass


def next_token(prefix):
    """The greedy token after ``prefix`` in the token-level model."""
    h = hashlib.sha256(np.asarray(prefix, np.int64).tobytes()).digest()
    logits = np.frombuffer(h[:VOCAB], np.int8)
    return int(np.argmax(logits)), logits.copy()


def expected(prompt, max_tokens, eos=None):
    toks, out = list(prompt), []
    while len(out) < max_tokens:
        t, _ = next_token(toks)
        toks.append(t)
        out.append(t)
        if t == eos:
            break
    return out


class TokenExecutor:
    page_tokens, context, vocab_size, logit_scale = 16, 256, VOCAB, 1.0

    def __init__(self, num_blocks, max_batch, max_step_tokens, fail_rate=0.0, rng=None,
                 during=None):
        self.num_blocks, self.max_batch, self.max_step_tokens = num_blocks, max_batch, \
            max_step_tokens
        self.cache = np.full((num_blocks, 16), POISON, np.int64)
        self.fail_rate, self.rng, self.during = fail_rate, rng, during
        self.steps = 0
        self.violations = []     #: writes over non-poison, reads of poison (the engine must
                                 #: not see them as executor failures)

    async def poison(self, blocks):
        self.cache[np.asarray(blocks, np.int64)] = POISON

    async def step(self, work):
        check_work(work, page_tokens=16, num_blocks=self.num_blocks, max_batch=self.max_batch,
                   max_step_tokens=self.max_step_tokens, context=self.context,
                   vocab_size=VOCAB)
        self.steps += 1
        if self.during is not None:
            self.during(work)
        await asyncio.sleep(0)
        if self.fail_rate and self.rng.random() < self.fail_rate:
            raise InjectedFailure("injected executor failure")
        out = []
        for w in work:
            table = np.asarray(w.block_table)
            pos = np.arange(w.start, w.start + len(w.tokens))
            b, s = table[pos // 16], pos % 16
            stale = self.cache[b, s] != POISON
            if stale.any():
                self.violations.append(f"seq {w.seq_id}: writes over non-poison slots "
                                       f"{list(zip(b[stale], s[stale]))}")
            self.cache[b, s] = w.tokens
            seen = np.arange(w.start + len(w.tokens))
            prefix = self.cache[table[seen // 16], seen % 16]
            if (prefix == POISON).any():
                self.violations.append(f"seq {w.seq_id}: reads poison at positions "
                                       f"{np.flatnonzero(prefix == POISON)}")
            out.append(next_token(prefix)[1] if w.want_logits else None)
        return out


def _trace(rng, n, max_prompt, max_tokens, steps):
    common = [int(t) for t in rng.integers(0, VOCAB, 48)]
    out = []
    for _ in range(n):
        plen = int(rng.integers(1, max_prompt + 1))
        prompt = [int(t) for t in rng.integers(0, VOCAB, plen)]
        if rng.random() < 0.4:                         # a shared prefix of 16..48 tokens
            k = int(rng.integers(16, 49))
            prompt = (common[:k] + prompt)[:max(plen, k + 1)]
        if out and rng.random() < 0.2:                 # the same prompt again (whole blocks)
            prompt = list(out[int(rng.integers(0, len(out)))].prompt)
            if rng.random() < 0.5 and len(prompt) >= 16:
                prompt = prompt[:len(prompt) // 16 * 16]
        arrival = int(rng.integers(0, steps + 1))
        eos = int(rng.integers(0, VOCAB)) if rng.random() < 0.3 else None
        cancel = arrival + int(rng.integers(0, 12)) if rng.random() < 0.2 else None
        out.append(TraceRequest(arrival, tuple(prompt), int(rng.integers(1, max_tokens + 1)),
                                eos, cancel))
    return sorted(out, key=lambda r: r.arrival)


async def _serve(rng, trace, num_blocks, batch, budget, fail_rate, prefix_caching):
    cancel_during = {}

    def during(work):                                  # some clients cancel mid-step
        for w in work:
            if cancel_during.get(w.seq_id) == ex.steps:
                eng.streams[w.seq_id].cancel()
    ex = TokenExecutor(num_blocks, batch, budget, fail_rate, rng, during)
    eng = Engine(ex, check_invariants=True, prefix_caching=prefix_caching)

    def on_submit(i, stream):
        if rng.random() < 0.1:
            cancel_during[stream.request_id] = ex.steps + int(rng.integers(1, 10))
    streams = await run_trace(eng, trace, on_submit=on_submit, max_steps=5000)
    results = []
    for s in streams:
        try:
            got, err = await s.collect(), None
        except Exception as e:                          # noqa: BLE001 - the injected failure
            got, err = s.tokens, e
        invariants.check_stream(s)
        results.append((s, got, err))
    assert not ex.violations, ex.violations[:5]
    return eng, results


def test_many_random_traces_on_the_token_executor():
    print(f"[serving stress] SEED={SEED} (rerun: SEED={SEED} .venv/bin/python -m pytest -q "
          f"tests/test_serving_stress.py)")
    rng = np.random.default_rng(SEED)
    totals = dict(preemptions=0, prefix_hits=0, cancelled=0, error=0, eos=0, length=0)
    for k in range(150):
        max_prompt, max_tokens = int(rng.integers(1, 70)), int(rng.integers(1, 40))
        trace = _trace(rng, int(rng.integers(1, 10)), max_prompt, max_tokens,
                       int(rng.integers(0, 20)))
        need = max(blocks_for(len(t.prompt) + t.max_tokens - 1) for t in trace)
        num_blocks = need + int(rng.integers(0, 8))
        batch, budget = int(rng.integers(1, 9)), int(rng.integers(1, 80))
        fail = 0.03 if k % 5 == 4 else 0.0
        eng, results = asyncio.run(_serve(rng, trace, num_blocks, batch, budget, fail,
                                          prefix_caching=k % 7 != 0))
        where = f"trace {k} (blocks {num_blocks}, batch {batch}, budget {budget}, SEED={SEED})"
        for t, (s, got, err) in zip(trace, results):
            want = expected(t.prompt, t.max_tokens, t.eos)
            reason = s.finish_reason
            totals[reason] += 1
            if reason in ("eos", "length"):
                invariants.check_same_tokens(got, want, f"{where} request {s.request_id}: ")
                assert reason == ("eos" if want[-1] == t.eos else "length"), where
            else:
                assert reason in ("cancelled", "error"), (where, reason)
                assert (err is not None) == (reason == "error"), where
                assert err is None or isinstance(err.__cause__, InjectedFailure), (where, err)
                invariants.check_same_tokens(got, want[:len(got)], f"{where}: ")
        assert eng.blocks.num_used == 0 and eng.blocks.num_free == num_blocks, where
        totals["preemptions"] += eng.summary()["preemptions"]
        totals["prefix_hits"] += eng.blocks.counters["prefix_hits"]
    print(totals)
    assert all(totals[k] > 0 for k in totals), totals
