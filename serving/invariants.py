"""The serving invariants of issue 15 item 4 as reusable checks (docs/serving.md "Invariants").

Each function raises :class:`serving.kv_blocks.InvariantError` (an AssertionError) naming the
block, sequence or request at fault. ``Engine(check_invariants=True)`` runs
:func:`check_before_step` just before every executor step and :func:`check_engine` after every
step; an executor test (the RTL one too) can call them itself. :func:`check_stream` and
:func:`check_same_tokens` judge the streams after a run.
"""
import numpy as np

from .kv_blocks import InvariantError, blocks_for
from .scheduler import RequestState

__all__ = ["InvariantError", "check_blocks", "check_before_step", "check_engine", "check_stream",
           "check_same_tokens"]


def check_blocks(engine):
    """Block tables, reference counts, sharing (with each running request's tokens), the free
    queue and conservation (``BlockManager.check``)."""
    engine.blocks.check({r.rid: r.tokens for r in engine.scheduler.running})


def check_before_step(engine, work):
    """The step about to run is consistent with the bookkeeping:

    * no block is pending poison (every block taken for new content was poisoned);
    * each item's block table is its sequence's table, covering exactly its positions (no block
      beyond the one its last position falls in);
    * each item starts where its sequence's computed positions end, with its own tokens;
    * every position it writes falls in a block only it holds (reference count 1): a shared
      (prefix-cached) block is never written;
    * at most ``max_batch`` items and ``max_step_tokens`` tokens, no chunk above ``max_chunk``.
    """
    bm = engine.blocks
    pending = bm.pending_poison()
    if pending:
        raise InvariantError(f"blocks {pending} are about to be written without poison")
    if len(work) > engine.max_batch:
        raise InvariantError(f"{len(work)} items exceed max_batch {engine.max_batch}")
    total = sum(len(w.tokens) for w in work)
    if total > engine.max_step_tokens:
        raise InvariantError(f"{total} tokens exceed the step budget {engine.max_step_tokens}")
    for w in work:
        req = engine.requests[w.seq_id]
        end = w.start + len(w.tokens)
        if engine.max_chunk is not None and len(w.tokens) > engine.max_chunk:
            raise InvariantError(f"request {w.seq_id}: chunk of {len(w.tokens)} tokens exceeds "
                                 f"max_chunk {engine.max_chunk}")
        if req.state is not RequestState.RUNNING:
            raise InvariantError(f"request {w.seq_id} is {req.state.value} but scheduled")
        if tuple(w.block_table) != bm.table(w.seq_id):
            raise InvariantError(f"request {w.seq_id}: work table {w.block_table} is not its "
                                 f"block table {bm.table(w.seq_id)}")
        if len(w.block_table) != blocks_for(end, bm.page_tokens) or bm.covered(w.seq_id) != end:
            raise InvariantError(f"request {w.seq_id}: table of {len(w.block_table)} blocks "
                                 f"covering {bm.covered(w.seq_id)} positions for positions "
                                 f"0..{end - 1}")
        if w.start != req.num_computed:
            raise InvariantError(f"request {w.seq_id}: step starts at {w.start} but "
                                 f"{req.num_computed} positions are computed")
        if list(w.tokens) != req.tokens[w.start:end]:
            raise InvariantError(f"request {w.seq_id}: step tokens differ from its tokens "
                                 f"{w.start}..{end - 1}")
        for j in range(w.start // bm.page_tokens, blocks_for(end, bm.page_tokens)):
            b = w.block_table[j]
            if bm.refcount(b) != 1:
                raise InvariantError(f"request {w.seq_id} writes block {b} (logical {j}) of "
                                     f"reference count {bm.refcount(b)}")


def check_engine(engine):
    """After a step: :func:`check_blocks`; exactly the running requests have block tables, each
    covering exactly its computed positions; waiting and running are disjoint and hold no
    finished request; every finished request's stream has ended and no live one's has; no
    request generated more than ``max_tokens`` or holds more than the context."""
    check_blocks(engine)
    sch, bm = engine.scheduler, engine.blocks
    running = {r.rid for r in sch.running}
    waiting = {r.rid for r in sch.waiting}
    if running & waiting:
        raise InvariantError(f"requests {sorted(running & waiting)} both waiting and running")
    if set(bm.seqs()) != running:
        raise InvariantError(f"block tables of {sorted(bm.seqs())} but running {sorted(running)}")
    for r in sch.running:
        if r.state is not RequestState.RUNNING:
            raise InvariantError(f"request {r.rid} in the running set is {r.state.value}")
        if bm.covered(r.rid) != r.num_computed:
            raise InvariantError(f"request {r.rid}: {bm.covered(r.rid)} positions allocated, "
                                 f"{r.num_computed} computed")
    for r in sch.waiting:
        if r.state is not RequestState.WAITING or r.num_computed:
            raise InvariantError(f"request {r.rid} waiting in state {r.state.value} with "
                                 f"{r.num_computed} computed positions")
    for rid, r in engine.requests.items():
        stream = engine.streams[rid]
        done = r.state is RequestState.FINISHED
        if done != stream.closed:
            raise InvariantError(f"request {rid}: state {r.state.value} but stream "
                                 f"{'ended' if stream.closed else 'open'}")
        if done and (rid in running or rid in waiting or bm.has(rid)):
            raise InvariantError(f"finished request {rid} still queued or holding blocks")
        if len(r.output) > r.max_tokens or len(r.tokens) > engine.executor.context:
            raise InvariantError(f"request {rid}: {len(r.output)} tokens generated (max "
                                 f"{r.max_tokens}), {len(r.tokens)} in all")


def check_stream(stream):
    """A stream that ended and was read to its end delivered exactly its request's generated
    tokens, in order, once."""
    req = stream.request
    if not stream.closed:
        raise InvariantError(f"request {req.rid}: stream has not ended")
    if stream.tokens != req.output:
        raise InvariantError(f"request {req.rid}: delivered {stream.tokens} but generated "
                             f"{req.output}")


def check_same_tokens(got, want, what=""):
    """Token lists equal; the message shows the first difference."""
    got, want = [int(t) for t in got], [int(t) for t in want]
    if got != want:
        i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got),
                                                                                len(want)))
        raise InvariantError(f"{what}tokens differ at {i}: got {got[i:i + 8]}..., want "
                             f"{want[i:i + 8]}... ({len(got)} vs {len(want)} tokens)")
    return np.asarray(got)
