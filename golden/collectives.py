"""NumPy golden models of the collectives over a group of ``n`` chips joined in a ring, and the
ring schedule they execute.

A collective takes one NumPy array per chip (a list of ``n >= 1`` arrays of one shape and dtype)
and returns one array per chip. The arithmetic is the chips': a reduction is an int32 sum that
wraps modulo 2^32 (the accumulator's adder), so its inputs must be int32; gathers and broadcasts
move bytes and take any dtype. Nothing is converted: a wrong dtype, a shape that differs between
chips, ``n < 1``, a root or an axis out of range is a ValueError naming the offending value.

Chunking rule
-------------
A buffer of ``size`` units (elements, or rows along an axis) is cut into ``n`` contiguous chunks;
chunk ``c`` holds units ``[c*size//n, (c+1)*size//n)`` (:func:`chunks`). The chunks differ in
length by at most one, cover the buffer exactly once and may be empty (``size < n``).

Ring schedule
-------------
Chip ``i`` sends only to chip ``(i + 1) % n``. :func:`ring_schedule` returns the steps of a
collective as data: per step a list of :class:`Transfer` (source chip, destination chip, unit
offset, unit count, and whether the destination adds the units into its buffer or overwrites
them). Transfers of zero units are left out. Within a step no transfer reads units that another
transfer of the same step writes, so a step's transfers may run in any order or all at once; a
step starts when the previous one has ended on every chip. The collectives below *execute* these
schedules (:func:`execute`), so the schedule the hardware and firmware follow is the one tested
here against plain NumPy sums and concatenations.

* ``reduce_scatter`` (n - 1 steps): in step ``s`` chip ``i`` sends chunk ``(i - s - 1) % n`` of its
  buffer, which the next chip adds into its own. Chunk ``c`` thus starts at chip ``c + 1`` and
  travels once round the ring, collecting every chip's contribution, and ends complete on chip
  ``c``.
* ``all_gather`` (n - 1 steps): chip ``i`` starts with chunk ``i``; in step ``s`` it sends chunk
  ``(i - s) % n``, which the next chip stores.
* ``all_reduce`` (2(n - 1) steps): ``reduce_scatter`` then ``all_gather``: every chip sends and
  receives ``2(n-1)/n`` of the buffer, the bandwidth-optimal amount.
* ``broadcast`` from ``root`` (2n - 2 steps for n >= 2): a pipeline along the chain ``root, root +
  1, ..., root + n - 1``: in step ``s`` the chip ``k`` hops after the root forwards chunk ``s - k``
  (while ``0 <= s - k < n``), so each link carries the buffer once, a chunk at a time.
"""
from typing import NamedTuple

import numpy as np

__all__ = ["Transfer", "OPS", "chunks", "ring_schedule", "execute", "all_reduce", "reduce_scatter",
           "all_gather", "broadcast"]

#: The collectives :func:`ring_schedule` knows.
OPS = ("reduce_scatter", "all_gather", "all_reduce", "broadcast")


class Transfer(NamedTuple):
    """One link transfer: units ``[offset, offset + count)`` of chip ``src``'s buffer to the same
    units of chip ``dst``'s buffer, added into them (``reduce``, int32 wrapping) or overwriting them."""
    src: int
    dst: int
    offset: int
    count: int
    reduce: bool


# ---------------------------------------------------------------------------------- the schedule

def chunks(size, n):
    """``[(start, stop)]`` of the ``n`` chunks of a ``size``-unit buffer (the chunking rule)."""
    _count("n", n, 1)
    _count("size", size, 0)
    return [(c * size // n, (c + 1) * size // n) for c in range(n)]


def _ring_step(n, bounds, chunk_of, reduce):
    """One step in which every chip ``i`` sends chunk ``chunk_of(i)`` to the next chip."""
    out = []
    for i in range(n):
        start, stop = bounds[chunk_of(i) % n]
        if stop > start:
            out.append(Transfer(i, (i + 1) % n, start, stop - start, reduce))
    return out


def _broadcast_steps(n, bounds, root):
    steps = []
    for s in range(2 * n - 2 if n > 1 else 0):
        step = []
        for k in range(n - 1):                   # hop k: chain position k -> k + 1
            c = s - k
            if 0 <= c < n and bounds[c][1] > bounds[c][0]:
                src = (root + k) % n
                step.append(Transfer(src, (src + 1) % n, bounds[c][0], bounds[c][1] - bounds[c][0],
                                     False))
        steps.append(step)
    return steps


def ring_schedule(op, n, size, *, root=0):
    """The steps of collective ``op`` (one of :data:`OPS`) on a ring of ``n`` chips over a buffer
    of ``size`` units: a list of steps, each a list of :class:`Transfer`. ``root`` is the
    broadcasting chip (``broadcast`` only). See the module docstring for the algorithms."""
    if op not in OPS:
        raise ValueError(f"op {op!r} is not a collective (one of {', '.join(OPS)})")
    bounds = chunks(size, n)
    _root(root, n)
    rs = [_ring_step(n, bounds, lambda i, s=s: i - s - 1, True) for s in range(n - 1)]
    ag = [_ring_step(n, bounds, lambda i, s=s: i - s, False) for s in range(n - 1)]
    return {"reduce_scatter": rs, "all_gather": ag, "all_reduce": rs + ag,
            "broadcast": _broadcast_steps(n, bounds, root)}[op]


def execute(schedule, buffers):
    """Run ``schedule`` on copies of ``buffers`` (one array per chip, units along axis 0) and
    return them. Every transfer of a step reads the buffers as they were when the step began."""
    bufs = [b.copy() for b in buffers]
    for step in schedule:
        sent = [bufs[t.src][t.offset:t.offset + t.count].copy() for t in step]
        for t, data in zip(step, sent):
            dst = bufs[t.dst][t.offset:t.offset + t.count]
            if t.reduce:
                np.add(dst, data, out=dst)       # int32 arrays: wraps modulo 2^32
            else:
                dst[...] = data
    return bufs


# ---------------------------------------------------------------------------------- validation

def _count(name, v, lo):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} = {v!r} must be an integer >= {lo}")


def _root(root, n):
    if isinstance(root, (bool, np.bool_)) or not isinstance(root, (int, np.integer)) \
            or not 0 <= root < n:
        raise ValueError(f"root = {root!r} is not a chip of the group (0..{n - 1})")


def _group(op, buffers, dtype=None):
    """The per-chip arrays of ``op``'s group, checked: a non-empty list or tuple of NumPy arrays of
    one shape and dtype (``dtype`` when given). Returns them as a list."""
    if not isinstance(buffers, (list, tuple)):
        raise ValueError(f"{op}: buffers must be a list of NumPy arrays (one per chip), got "
                         f"{type(buffers).__name__}")
    if not buffers:
        raise ValueError(f"{op}: n = 0 chips: a group needs at least one")
    for i, b in enumerate(buffers):
        if not isinstance(b, np.ndarray):
            raise ValueError(f"{op}: buffers[{i}] is a {type(b).__name__}, not a NumPy array")
        if dtype is not None and b.dtype != dtype:
            raise ValueError(f"{op}: buffers[{i}] has dtype {b.dtype}; {op} sums int32 "
                             f"(nothing is converted)")
        if b.shape != buffers[0].shape or b.dtype != buffers[0].dtype:
            raise ValueError(f"{op}: buffers[{i}] is {b.dtype} {b.shape}, buffers[0] is "
                             f"{buffers[0].dtype} {buffers[0].shape}: every chip's buffer must match")
    return list(buffers)


def _axis(op, axis, ndim):
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)) \
            or not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis = {axis!r} is out of range for {ndim}-dimensional buffers")
    return int(axis) % ndim


def _rows(b, axis):
    """``b`` with ``axis`` moved to the front (the schedule's units are its rows)."""
    return np.moveaxis(b, axis, 0)


# ---------------------------------------------------------------------------------- collectives

def all_reduce(buffers):
    """Every chip gets the int32 sum (wrapping modulo 2^32) of all chips' int32 buffers."""
    bufs = _group("all_reduce", buffers, np.dtype(np.int32))
    flat = [b.reshape(-1) for b in bufs]
    sched = ring_schedule("all_reduce", len(bufs), flat[0].size)
    return [r.reshape(bufs[0].shape) for r in execute(sched, flat)]


def reduce_scatter(buffers, axis=None):
    """Chip ``c`` gets chunk ``c`` of the int32 sum (wrapping) of all chips' int32 buffers: with
    ``axis=None`` elements of the flattened buffer (a 1-D result), else the chunk's indices along
    ``axis`` (the result keeps the other dimensions)."""
    bufs = _group("reduce_scatter", buffers, np.dtype(np.int32))
    n = len(bufs)
    if axis is None:
        units = [b.reshape(-1) for b in bufs]
    else:
        axis = _axis("reduce_scatter", axis, bufs[0].ndim)
        units = [_rows(b, axis) for b in bufs]
    done = execute(ring_schedule("reduce_scatter", n, len(units[0])), units)
    bounds = chunks(len(units[0]), n)
    mine = [done[c][start:stop] for c, (start, stop) in enumerate(bounds)]
    return mine if axis is None else [np.moveaxis(m, 0, axis) for m in mine]


def all_gather(buffers, axis=0):
    """Every chip gets the concatenation along ``axis`` of all chips' buffers (any dtype), in chip
    order."""
    bufs = _group("all_gather", buffers)
    n = len(bufs)
    if bufs[0].ndim == 0:
        raise ValueError("all_gather: 0-dimensional buffers have no axis to gather along")
    axis = _axis("all_gather", axis, bufs[0].ndim)
    rows = [_rows(b, axis) for b in bufs]
    m = len(rows[0])
    # chunk c of the n*m gathered rows is rows [c*m, (c+1)*m): exactly chip c's buffer
    start = []
    for c, r in enumerate(rows):
        g = np.zeros((n * m,) + r.shape[1:], r.dtype)
        g[c * m:(c + 1) * m] = r
        start.append(g)
    done = execute(ring_schedule("all_gather", n, n * m), start)
    return [np.moveaxis(d, 0, axis) for d in done]


def broadcast(buffers, root=0):
    """Every chip gets chip ``root``'s buffer (any dtype; the other chips' contents are ignored but
    must have its shape and dtype)."""
    bufs = _group("broadcast", buffers)
    _root(root, len(bufs))
    flat = [b.reshape(-1) for b in bufs]
    sched = ring_schedule("broadcast", len(bufs), flat[0].size, root=root)
    return [r.reshape(bufs[0].shape) for r in execute(sched, flat)]
