"""Iteration-level (continuous) batching with chunked prefill and preemption by recompute
(docs/serving.md "Scheduler").

Every step the scheduler picks the running batch anew under a token budget (``token_budget``
tokens and ``max_batch`` sequences per step), in three passes:

1. **Decodes first.** Every running sequence that is generating gets its one token, oldest
   request first.
2. **Prefill chunks** of the running sequences whose prompt (or recompute) is not finished, oldest
   first, then
3. **new requests** from the waiting queue, first come first served, while the budget, the batch
   and the free blocks allow (a waiting request that does not fit blocks the ones behind it; no
   request is admitted in a step that preempted one). A new request first shares the cached full
   blocks of its prefix (``BlockManager.lookup``) and starts computing after them.

**Chunk rule.** A sequence at position ``c`` with ``r`` tokens left to compute and ``b`` tokens of
budget left (at most ``max_chunk``, when the executor limits its chunks) gets ``r`` tokens when ``r <= b`` (its final chunk, whose last token's logits are
sampled); otherwise its chunk ends on the last 16-token boundary at or before ``c + b``, so the
next chunk starts on a fresh block; when no boundary lies in ``(c, c + b]`` it takes the whole
``b``. (:func:`chunk_len`.)

**Blocks.** A scheduled item grows its table to cover the positions it computes (a new block on
each 16-token boundary). When the free blocks do not suffice, the scheduler **preempts by
recompute** the newest (latest arrival) running request not yet scheduled in this step, which may
be the requester itself (then it waits): its blocks are freed, it is requeued at the front of the
waiting queue with all its tokens (prompt + generated) to compute again, and on readmission it
computes them as a prefill (its full blocks are often still cached, so it shares them back). As
in vLLM, priority is arrival order: an older request never loses its blocks to a newer one.
"""
import enum
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .kv_blocks import PAGE_TOKENS

__all__ = ["RequestState", "SamplingParams", "Request", "ScheduledItem", "SchedulerOutput",
           "Scheduler", "chunk_len"]


class RequestState(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True)
class SamplingParams:
    """Greedy when ``temperature`` is 0; else softmax sampling at ``temperature`` over the
    ``top_k`` largest logits (all when 0) from the request's own seeded generator."""
    temperature: float = 0.0
    top_k: int = 0
    seed: int | None = None


@dataclass(eq=False)
class Request:
    """A request's state in the scheduler. ``tokens`` is the prompt followed by the generated
    tokens; positions ``0 .. num_computed - 1`` are in the KV cache; until ``num_computed``
    reaches ``prefill_target`` (the prompt, or after a preemption all its tokens) it is
    prefilling, then it decodes one token per step."""
    rid: int
    prompt: np.ndarray
    max_tokens: int
    eos: int | None = None
    sampling: SamplingParams = SamplingParams()
    arrival: int = 0
    tokens: list = field(default_factory=list)
    output: list = field(default_factory=list)
    num_computed: int = 0
    prefill_target: int = 0
    state: RequestState = RequestState.WAITING
    preemptions: int = 0
    cached_tokens: int = 0          #: positions shared from the prefix cache at the last admission
    finish_reason: str | None = None
    cancel_requested: bool = False
    rng: object = None

    def __post_init__(self):
        self.prompt = np.asarray(self.prompt, np.int64)
        if not self.tokens:
            self.tokens = [int(t) for t in self.prompt]
        self.prefill_target = self.prefill_target or len(self.tokens)

    @property
    def remaining(self):
        """Tokens to compute before the next logits."""
        return len(self.tokens) - self.num_computed

    @property
    def decoding(self):
        return self.num_computed >= self.prefill_target


@dataclass(frozen=True)
class ScheduledItem:
    req: Request
    start: int
    tokens: np.ndarray
    want_logits: bool
    kind: str                        #: "decode", "prefill" or "recompute"


@dataclass
class SchedulerOutput:
    items: list
    preempted: list


def chunk_len(start, remaining, budget, page=PAGE_TOKENS):
    """Tokens of a prefill chunk at position ``start`` with ``remaining`` tokens to compute and
    ``budget`` tokens left in the step (module docstring "Chunk rule")."""
    if remaining <= budget:
        return remaining
    end = (start + budget) // page * page
    return end - start if end > start else budget


class Scheduler:
    """The waiting queue, the running set and the per-step batch (module docstring) over a
    ``serving.kv_blocks.BlockManager``."""

    def __init__(self, blocks, *, max_batch, token_budget, max_chunk=None):
        if max_batch < 1 or token_budget < 1 or (max_chunk is not None and max_chunk < 1):
            raise ValueError(f"max_batch {max_batch}, token_budget {token_budget} and max_chunk "
                             f"{max_chunk} must be >= 1")
        self.blocks = blocks
        self.max_batch = int(max_batch)
        self.token_budget = int(token_budget)
        self.max_chunk = None if max_chunk is None else int(max_chunk)
        self.waiting = deque()
        self.running = []            # sorted by arrival (priority)
        self.preemptions = 0

    def add(self, req):
        if self.waiting and self.waiting[-1].arrival > req.arrival:
            raise ValueError(f"request {req.rid} arrives out of order")
        req.state = RequestState.WAITING
        self.waiting.append(req)

    def has_work(self):
        return bool(self.waiting or self.running)

    # ------------------------------------------------------------------------------ one step
    def schedule(self):
        """The next step's items (decodes, then prefill chunks of running requests, then new
        requests) and the requests preempted to make room."""
        items, preempted, scheduled = [], [], set()
        budget = self.token_budget

        def room():
            return len(items) < self.max_batch and budget >= 1

        for req in list(self.running):                          # 1. decodes
            if not room():
                break
            if req.state is not RequestState.RUNNING or not req.decoding:
                continue
            if self._grow(req, 1, scheduled, preempted):
                items.append(self._item(req, 1))
                scheduled.add(req.rid)
                budget -= 1
        for req in list(self.running):                          # 2. running prefills
            if not room():
                break
            if req.state is not RequestState.RUNNING or req.rid in scheduled or req.decoding:
                continue
            n = chunk_len(req.num_computed, req.remaining, self._cap(budget),
                          self.blocks.page_tokens)
            if self._grow(req, n, scheduled, preempted):
                items.append(self._item(req, n))
                scheduled.add(req.rid)
                budget -= n
        while self.waiting and room() and not preempted:       # 3. admissions
            req = self.waiting[0]
            shared = self.blocks.lookup(req.tokens)
            cached = len(shared) * self.blocks.page_tokens
            n = chunk_len(cached, len(req.tokens) - cached, self._cap(budget),
                          self.blocks.page_tokens)
            if not self.blocks.allocate(req.rid, cached + n, shared):
                break
            self.waiting.popleft()
            req.state, req.num_computed, req.cached_tokens = RequestState.RUNNING, cached, cached
            self._insert_running(req)
            items.append(self._item(req, n))
            scheduled.add(req.rid)
            budget -= n
        return SchedulerOutput(items, preempted)

    def _cap(self, budget):
        """The tokens a prefill chunk may take: the budget left, at most ``max_chunk``."""
        return budget if self.max_chunk is None else min(budget, self.max_chunk)

    def _item(self, req, n):
        start = req.num_computed
        end = start + n
        kind = ("decode" if req.decoding else
                "recompute" if req.preemptions and start < req.prefill_target else "prefill")
        return ScheduledItem(req, start, np.asarray(req.tokens[start:end], np.int64),
                             end == len(req.tokens), kind)

    def _grow(self, req, n, scheduled, preempted):
        """Cover ``req``'s next ``n`` positions, preempting the newest unscheduled running
        requests while blocks are short; False when ``req`` itself was preempted."""
        while not self.blocks.allocate(req.rid, req.num_computed + n):
            victim = max((r for r in self.running if r.rid not in scheduled),
                         key=lambda r: r.arrival)
            self.preempt(victim)
            preempted.append(victim)
            if victim is req:
                return False
        return True

    def _insert_running(self, req):
        i = len(self.running)
        while i and self.running[i - 1].arrival > req.arrival:
            i -= 1
        self.running.insert(i, req)

    # ------------------------------------------------------------------------------ transitions
    def preempt(self, req):
        """Preemption by recompute: free ``req``'s blocks, requeue it at the front of the waiting
        queue; it will compute all its tokens again."""
        self.blocks.free(req.rid)
        self.running.remove(req)
        req.state = RequestState.WAITING
        req.num_computed = 0
        req.prefill_target = len(req.tokens)
        req.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(req)

    def computed(self, item):
        """``item`` ran: its positions are in the cache (registered for prefix sharing)."""
        req = item.req
        req.num_computed = item.start + len(item.tokens)
        self.blocks.commit(req.rid, req.tokens, req.num_computed)

    def finish(self, req, reason):
        """Take ``req`` out (finished, cancelled, failed): its blocks are freed exactly once.
        Returns False (and does nothing) when it was finished already."""
        if req.state is RequestState.FINISHED:
            return False
        if req.state is RequestState.RUNNING:
            self.blocks.free(req.rid)
            self.running.remove(req)
        else:
            self.waiting.remove(req)
        req.state = RequestState.FINISHED
        req.finish_reason = reason
        return True
