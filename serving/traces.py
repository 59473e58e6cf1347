"""Seeded arrival traces and the driver that serves them step by step (the invariant tests, and
any executor's test or benchmark: the same trace on the reference executor, the golden backend
or the RTL).

A trace is a list of :class:`TraceRequest`: the step at which a request arrives, its prompt,
``max_tokens``, EOS, and optionally the step at which its client cancels it.
:func:`run_trace` submits and cancels them at those steps while stepping the engine until it is
idle; :func:`serve_alone` is the reference: one request on an otherwise empty engine.
"""
import asyncio
from dataclasses import dataclass

import numpy as np

__all__ = ["TraceRequest", "random_trace", "run_trace", "serve_alone"]


@dataclass(frozen=True)
class TraceRequest:
    arrival: int                    #: the step before which it is submitted
    prompt: tuple                   #: token ids
    max_tokens: int
    eos: int | None = None
    cancel_at: int | None = None    #: the step before which its client cancels it (None: never)


def random_trace(rng, corpus_ids, *, requests=6, max_prompt=48, max_tokens=16, steps=12,
                 shared_prefix=0.3, cancel=0.15, eos_ids=()):
    """A trace of ``requests`` requests arriving over ``steps`` steps, prompts cut from
    ``corpus_ids`` (token ids). A fraction ``shared_prefix`` start with the same 32 tokens (so
    full blocks are shared); a fraction ``cancel`` are cancelled a few steps after they arrive;
    when ``eos_ids`` is given, some requests stop on one of them."""
    corpus_ids = np.asarray(corpus_ids, np.int64)
    common = corpus_ids[:32]
    out = []
    for _ in range(requests):
        n = int(rng.integers(1, max_prompt + 1))
        lo = int(rng.integers(0, len(corpus_ids) - n))
        prompt = corpus_ids[lo:lo + n]
        if rng.random() < shared_prefix:
            prompt = np.concatenate([common, prompt[:max(0, max_prompt - 32)]])
        arrival = int(rng.integers(0, steps + 1))
        eos = int(rng.choice(eos_ids)) if len(eos_ids) and rng.random() < 0.3 else None
        cancel_at = arrival + int(rng.integers(0, 8)) if rng.random() < cancel else None
        out.append(TraceRequest(arrival, tuple(int(t) for t in prompt),
                                int(rng.integers(1, max_tokens + 1)), eos, cancel_at))
    return sorted(out, key=lambda r: r.arrival)


async def run_trace(engine, trace, *, on_submit=None, max_steps=100_000):
    """Serve ``trace`` on ``engine`` (stepping it by hand): returns the streams in trace order.
    Every stream has ended when it returns. ``on_submit(index, stream)`` is called after each
    submission."""
    streams, pending, step = [None] * len(trace), list(range(len(trace))), 0
    while pending or engine.has_work():
        for i in [i for i in pending if trace[i].arrival <= step]:
            t = trace[i]
            streams[i] = engine.submit(np.asarray(t.prompt, np.int64), t.max_tokens, t.eos)
            pending.remove(i)
            if on_submit is not None:
                on_submit(i, streams[i])
        for i, t in enumerate(trace):
            if t.cancel_at == step and streams[i] is not None:
                streams[i].cancel()
        await engine.step()
        await asyncio.sleep(0)
        step += 1
        if step > max_steps:
            raise RuntimeError(f"trace not served after {max_steps} steps")
    return streams


async def serve_alone(engine, prompt, max_tokens, eos=None):
    """The tokens ``engine`` (fresh, nothing else submitted) generates for one request."""
    stream = engine.submit(np.asarray(prompt, np.int64), max_tokens, eos)
    await engine.run_until_idle()
    return await stream.collect()
