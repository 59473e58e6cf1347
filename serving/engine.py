"""The serving front: requests in, token streams out (docs/serving.md).

``Engine(executor)`` owns a :class:`serving.kv_blocks.BlockManager` sized to the executor's
cache and a :class:`serving.scheduler.Scheduler`; ``engine.submit(prompt, max_tokens)`` returns a
:class:`RequestStream`, an async iterator of the request's generated token ids. A step
(:meth:`Engine.step`) schedules the batch, has the executor poison the blocks taken for new
content, runs the executor, samples each finished item's next token on the host from its int8
logits and delivers it to its stream. Run the steps with ``await engine.run_until_idle()`` or in
the background with ``engine.start()`` / ``await engine.stop()`` (or ``async with engine``).

A stream yields every generated token once, in order, and always ends: on EOS (the EOS token is
delivered, then the stream ends with ``finish_reason == "eos"``), at ``max_tokens`` (``"length"``),
on :meth:`RequestStream.cancel` (``"cancelled"``: no token produced after the cancel is
delivered), when the executor fails a step the request is in (the iteration raises
:class:`RequestFailed`), or when the engine is stopped with the request unfinished
(``"aborted"``).
"""
import asyncio
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import invariants
from .executor import SeqWork
from .kv_blocks import BlockManager, InvariantError, blocks_for
from .scheduler import Request, RequestState, SamplingParams, Scheduler

__all__ = ["Engine", "RequestStream", "RequestFailed", "ContextLimitError", "StepStats", "sample"]

_END = object()


class RequestFailed(RuntimeError):
    """A request ended because a step it was in failed (the cause is ``__cause__``)."""


class ContextLimitError(ValueError):
    """A request that cannot fit the executor's context or cache (no sliding window)."""


@dataclass(frozen=True)
class StepStats:
    """One step: the batch the scheduler chose and the cache around it."""
    step: int
    batch: int                  #: items (sequences) in the step
    max_batch: int
    tokens: int                 #: tokens processed (prefill + recompute + decode)
    prefill_tokens: int
    recompute_tokens: int       #: prefill of preempted requests' tokens
    decode_tokens: int
    preempted: int              #: requests preempted by this step's scheduling
    poisoned: int               #: blocks poisoned before the step
    finished: int               #: requests that ended in this step (any reason)
    waiting: int                #: after the step
    running: int
    free_blocks: int
    used_blocks: int
    seconds: float              #: wall time of the step (scheduling + executor + sampling)

    @property
    def occupancy(self):
        return self.batch / self.max_batch


def sample(logits, params, rng, scale=1.0):
    """The next token from int8 ``logits`` [vocab]: greedy (argmax, the lowest id on a tie) when
    ``params.temperature`` is 0, else a draw from ``softmax(scale * logits / temperature)`` over
    the ``top_k`` largest (ties to the lower id) using ``rng``."""
    logits = np.asarray(logits)
    if params.temperature <= 0:
        return int(np.argmax(logits))
    x = logits.astype(np.float64) * (scale / params.temperature)
    order = np.argsort(-x, kind="stable")
    if params.top_k:
        order = order[:params.top_k]
    p = np.exp(x[order] - x[order[0]])
    return int(order[rng.choice(len(order), p=p / p.sum())])


class RequestStream:
    """The tokens of one request, as an async iterator (module docstring). ``tokens``: the ones
    delivered to the consumer so far; ``finish_reason`` and ``error`` once it ended."""

    def __init__(self, engine, req):
        self._engine = engine
        self._req = req
        self._queue = asyncio.Queue()
        self.tokens = []
        self.finish_reason = None
        self.error = None
        self.closed = False          #: the engine has ended the request (its last token is queued)
        self._drained = False

    @property
    def request_id(self):
        return self._req.rid

    @property
    def request(self):
        return self._req

    def cancel(self):
        """Stop the request: no token produced after this call is delivered; its blocks are
        freed (at the end of the step in flight, if any); the stream ends with ``"cancelled"``.
        Nothing happens when it has ended already."""
        self._engine._cancel(self._req)

    def __aiter__(self):
        return self

    async def __anext__(self):
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)              # stays ended
            self._drained = True
            if self.error is not None:
                raise RequestFailed(f"request {self._req.rid} failed: {self.error}") \
                    from self.error
            raise StopAsyncIteration
        self.tokens.append(item)
        return item

    def poll(self):
        """The tokens delivered since the last read, without waiting (for a caller that steps
        the engine itself, or runs under another scheduler than asyncio's, e.g. cocotb's).
        ``done`` tells when the stream has ended and every token was read; reaching the end of
        a failed request raises :class:`RequestFailed`."""
        out = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is _END:
                self._queue.put_nowait(_END)
                self._drained = True
                if self.error is not None:
                    self.tokens.extend(out)
                    raise RequestFailed(f"request {self._req.rid} failed: {self.error}") \
                        from self.error
                break
            out.append(item)
        self.tokens.extend(out)
        return out

    @property
    def done(self):
        """The stream has ended and its consumer has read every token."""
        return self.closed and (self._drained or self._queue.qsize() == 1)

    async def collect(self):
        """Every remaining token, until the stream ends."""
        return [t async for t in self]

    def _push(self, token):
        assert not self.closed, f"request {self._req.rid}: token after the stream ended"
        self._queue.put_nowait(token)

    def _close(self, reason, error=None):
        assert not self.closed, f"request {self._req.rid}: stream ended twice"
        self.closed = True
        self.finish_reason = reason
        self.error = error
        self._queue.put_nowait(_END)


class Engine:
    """The serving runtime over ``executor`` (module docstring).

    ``max_batch`` / ``max_step_tokens``: the scheduler's limits (default and at most the
    executor's); ``max_chunk``: the longest prefill chunk (default the executor's ``max_chunk``
    attribute when it has one, else the budget). ``vocab``: a ``compiler.llm_model.Vocab`` to accept text prompts and decode.
    ``prefix_caching``: share full blocks of equal prefixes. ``check_invariants``: run
    :mod:`serving.invariants` before and after every step (tests). ``on_step(engine, stats)``:
    called after every step. ``seed``: seeds the generators of sampling requests that give none.
    """

    def __init__(self, executor, *, max_batch=None, max_step_tokens=None, vocab=None,
                 prefix_caching=True, check_invariants=False, on_step=None, seed=0,
                 logit_scale=None, max_chunk=None):
        self.executor = executor
        self.vocab = vocab
        self.blocks = BlockManager(executor.num_blocks, executor.page_tokens,
                                   prefix_caching=prefix_caching)
        self.max_batch = min(int(max_batch or executor.max_batch), executor.max_batch)
        self.max_step_tokens = min(int(max_step_tokens or executor.max_step_tokens),
                                   executor.max_step_tokens)
        self.max_chunk = max_chunk if max_chunk is not None else getattr(executor, "max_chunk",
                                                                         None)
        self.scheduler = Scheduler(self.blocks, max_batch=self.max_batch,
                                   token_budget=self.max_step_tokens, max_chunk=self.max_chunk)
        self.check_invariants = check_invariants
        self.on_step = on_step
        self.seed = int(seed)
        self.logit_scale = float(logit_scale if logit_scale is not None
                                 else getattr(executor, "logit_scale", 1.0))
        self.vocab_size = len(vocab) if vocab is not None else getattr(executor, "vocab_size",
                                                                       None)
        self.stats = []
        self.requests = {}           # rid -> Request (all, including finished)
        self.streams = {}            # rid -> RequestStream
        self._next_rid = 0
        self._in_step = False
        self._task = None
        self._stopping = False
        self._wake = None
        self.loop_error = None

    # ------------------------------------------------------------------------------ requests
    def submit(self, prompt, max_tokens, eos=None, *, temperature=0.0, top_k=0, seed=None):
        """Queue a request: ``prompt`` token ids (or text, with ``vocab``), at most
        ``max_tokens`` generated tokens, stop after ``eos`` (a token id, or a one-symbol string
        with ``vocab``). Raises :class:`ContextLimitError` when ``len(prompt) + max_tokens``
        exceeds the executor's context or the cache could not hold it alone, ValueError on a bad
        prompt. Returns its :class:`RequestStream`."""
        if isinstance(prompt, str):
            if self.vocab is None:
                raise ValueError("a text prompt needs Engine(vocab=...)")
            prompt = self.vocab.encode(prompt)
        if isinstance(eos, str):
            if self.vocab is None:
                raise ValueError("a text EOS needs Engine(vocab=...)")
            eos = int(self.vocab.encode(eos)[0]) if len(eos) == 1 else None
            if eos is None:
                raise ValueError("eos must be one symbol")
        ids = np.asarray(prompt)
        if ids.ndim != 1 or len(ids) == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"prompt must be a non-empty 1-D array of token ids, got shape "
                             f"{ids.shape} dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if self.vocab_size is not None and ((ids < 0) | (ids >= self.vocab_size)).any():
            raise ValueError(f"prompt token ids outside 0..{self.vocab_size - 1}")
        max_tokens = int(max_tokens)
        if max_tokens < 1:
            raise ValueError(f"max_tokens = {max_tokens}: must be at least 1")
        ctx = self.executor.context
        if len(ids) + max_tokens > ctx:
            raise ContextLimitError(
                f"prompt of {len(ids)} tokens + max_tokens {max_tokens} = "
                f"{len(ids) + max_tokens} exceeds the context of {ctx} positions (0..{ctx - 1}); "
                f"there is no sliding window")
        need = blocks_for(len(ids) + max_tokens - 1, self.blocks.page_tokens)
        if need > self.blocks.total:
            raise ContextLimitError(
                f"prompt of {len(ids)} tokens + max_tokens {max_tokens} needs {need} KV blocks; "
                f"the cache has {self.blocks.total}")
        rid = self._next_rid
        self._next_rid += 1
        params = SamplingParams(float(temperature), int(top_k), seed)
        rng = np.random.default_rng(seed if seed is not None else [self.seed, rid])
        req = Request(rid, ids, max_tokens, None if eos is None else int(eos), params,
                      arrival=rid, rng=rng)
        stream = RequestStream(self, req)
        self.requests[rid], self.streams[rid] = req, stream
        self.scheduler.add(req)
        if self._wake is not None:
            self._wake.set()
        return stream

    def decode(self, ids):
        return self.vocab.decode(ids)

    def has_work(self):
        return self.scheduler.has_work()

    def live(self):
        """Requests not finished (waiting or running)."""
        return [r for r in self.requests.values() if r.state is not RequestState.FINISHED]

    def _cancel(self, req):
        if req.state is RequestState.FINISHED or req.cancel_requested:
            return
        req.cancel_requested = True
        if not self._in_step:
            self._end(req, "cancelled")

    def _end(self, req, reason, error=None):
        """The one way a request ends: the scheduler frees its blocks (once), its stream ends."""
        if self.scheduler.finish(req, reason):
            self.streams[req.rid]._close(reason, error)
            return True
        return False

    def _process_cancels(self):
        n = 0
        for req in self.live():
            if req.cancel_requested:
                n += self._end(req, "cancelled")
        return n

    # ------------------------------------------------------------------------------ stepping
    async def step(self):
        """Run one step; returns its :class:`StepStats`, or None when there was nothing to do."""
        t0 = time.perf_counter()
        n_finished = self._process_cancels()
        if not self.scheduler.has_work():
            return None
        out = self.scheduler.schedule()
        items = out.items
        if not items:
            raise RuntimeError(f"no progress: {len(self.scheduler.waiting)} waiting, "
                               f"{len(self.scheduler.running)} running, "
                               f"{self.blocks.num_free} free blocks, nothing schedulable")
        work = [self._work(it) for it in items]
        poisoned = 0
        self._in_step = True
        try:
            pending = self.blocks.pending_poison()
            if pending:
                await self.executor.poison(pending)
                self.blocks.mark_poisoned(pending)
                poisoned = len(pending)
            if self.check_invariants:
                invariants.check_before_step(self, work)
            results = await self.executor.step(work)
            if len(results) != len(work):
                raise RuntimeError(f"executor returned {len(results)} results for "
                                   f"{len(work)} items")
        except InvariantError:      # the runtime's own bookkeeping is wrong: not a device error
            self._in_step = False
            raise
        except Exception as e:      # the executor failed: end this step's requests with it
            self._in_step = False
            for it in items:
                n_finished += self._end(it.req, "error", e)
            results = None
        self._in_step = False
        if results is not None:
            for it, logits in zip(items, results):
                n_finished += self._complete(it, logits)
        n_finished += self._process_cancels()
        kinds = {k: sum(len(it.tokens) for it in items if it.kind == k)
                 for k in ("prefill", "recompute", "decode")}
        st = StepStats(len(self.stats), len(items), self.max_batch,
                       sum(len(it.tokens) for it in items), kinds["prefill"], kinds["recompute"],
                       kinds["decode"], len(out.preempted), poisoned, n_finished,
                       len(self.scheduler.waiting), len(self.scheduler.running),
                       self.blocks.num_free, self.blocks.num_used, time.perf_counter() - t0)
        self.stats.append(st)
        if self.check_invariants:
            invariants.check_engine(self)
        if self.on_step is not None:
            self.on_step(self, st)
        return st

    def _work(self, it):
        return SeqWork(it.req.rid, it.tokens, it.start, self.blocks.table(it.req.rid),
                       it.want_logits)

    def _complete(self, it, logits):
        """Book one item's results; returns 1 when its request ended."""
        req = it.req
        if req.cancel_requested or req.state is not RequestState.RUNNING:
            return 0                                   # cancelled during the step: dropped
        self.scheduler.computed(it)
        if not it.want_logits:
            return 0
        shape = np.shape(logits) if logits is not None else None
        if shape is None or len(shape) != 1 or (self.vocab_size is not None
                                                and shape[0] != self.vocab_size):
            return int(self._end(req, "error", RuntimeError(
                f"executor returned logits of shape {shape} for request {req.rid}")))
        tok = sample(logits, req.sampling, req.rng, self.logit_scale)
        req.tokens.append(tok)
        req.output.append(tok)
        self.streams[req.rid]._push(tok)
        if req.eos is not None and tok == req.eos:
            return int(self._end(req, "eos"))
        if len(req.output) >= req.max_tokens:
            return int(self._end(req, "length"))
        return 0

    async def run_until_idle(self):
        """Step until no request is waiting or running; returns the step statistics. An
        unexpected error (a bug, a broken invariant) ends every live request's stream with it,
        then propagates."""
        try:
            while self.scheduler.has_work():
                await self.step()
                await asyncio.sleep(0)
        except Exception as e:
            self._fail_all(e)
            raise
        return self.stats

    def _fail_all(self, error):
        self._in_step = False
        for req in self.live():
            try:
                self._end(req, "error", error)
            except Exception:                          # the bookkeeping itself is broken
                if not self.streams[req.rid].closed:
                    req.state = RequestState.FINISHED
                    self.streams[req.rid]._close("error", error)

    # ------------------------------------------------------------------------------ background
    def start(self):
        """Step in a background task of the running event loop while there is work."""
        if self._task is None:
            self._stopping = False
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def _loop(self):
        try:
            while not self._stopping:
                if not self.scheduler.has_work():
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self.step()
                await asyncio.sleep(0)
        except Exception as e:
            self.loop_error = e
            self._fail_all(e)

    async def stop(self):
        """End the background loop after its current step; unfinished requests end with
        ``"aborted"``. Re-raises an error that ended the loop."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
            self._task = None
        for req in self.live():
            self._end(req, "aborted")
        if self.loop_error is not None:
            raise self.loop_error

    async def __aenter__(self):
        return self.start()

    async def __aexit__(self, *exc):
        await self.stop()

    # ------------------------------------------------------------------------------ report
    def summary(self):
        """Totals over the steps so far (for a report)."""
        st = self.stats
        steps = len(st)
        tot = lambda k: sum(getattr(s, k) for s in st)  # noqa: E731
        return dict(
            steps=steps, tokens=tot("tokens"), prefill_tokens=tot("prefill_tokens"),
            recompute_tokens=tot("recompute_tokens"), decode_tokens=tot("decode_tokens"),
            preemptions=tot("preempted"), poisoned_blocks=tot("poisoned"),
            mean_batch=tot("batch") / steps if steps else 0.0,
            mean_occupancy=tot("batch") / (steps * self.max_batch) if steps else 0.0,
            tokens_per_step=tot("tokens") / steps if steps else 0.0,
            requests=len(self.requests),
            finished={r: sum(1 for q in self.requests.values() if q.finish_reason == r)
                      for r in ("eos", "length", "cancelled", "error", "aborted")},
            blocks=self.blocks.stats(), seconds=tot("seconds"))

    def report(self):
        """The summary as text lines."""
        s = self.summary()
        b = s["blocks"]
        return "\n".join([
            f"steps {s['steps']}, tokens {s['tokens']} ({s['tokens_per_step']:.1f} per step): "
            f"prefill {s['prefill_tokens']}, recompute {s['recompute_tokens']}, "
            f"decode {s['decode_tokens']}",
            f"batch occupancy {s['mean_occupancy']:.1%} (mean {s['mean_batch']:.2f} of "
            f"{self.max_batch}), preemptions {s['preemptions']}",
            f"requests {s['requests']}: " + ", ".join(f"{k} {v}" for k, v in s["finished"].items()),
            f"KV blocks {b['total']}: {b['allocated']} allocations, {b['prefix_hits']} prefix "
            f"hits, {b['evicted']} cached blocks evicted, {s['poisoned_blocks']} poisoned",
            f"wall {s['seconds']:.2f} s"])

    def step_table(self):
        """Per-step statistics as dicts (for a report or a trace)."""
        return [asdict(s) for s in self.stats]
