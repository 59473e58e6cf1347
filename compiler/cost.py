"""Cost model: predicted engine cycles per command, from the capabilities.

* DMA (load or store): ``DMA_SETUP`` plus ``DMA_BEAT`` per bus beat: a host row of
  ``row_bytes`` starting at byte ``a`` touches ``ceil((a % dma_data_bytes + row_bytes) /
  dma_data_bytes)`` beats (the DMA reads and writes whole beats from the row's address rounded
  down, hdl_gen/dma_engine.py), so a row that is not beat-aligned costs a beat more
  (:func:`dma_beats`, from the command's host offset and strides); zero rows (``row_bytes =
  0``) one cycle each. Fitted on ``make bench``'s cost-model runs (PERF_DMA_*_BUSY of the random
  graph family of seed ``verif.graph_family.FIT_SEED``).
* GEMM: ``GEMM_SETUP`` + the two streams (:func:`gemm_stream_cycles`: from the first B row read
  to the last A row read; the B stream loads tile ``t+1``'s ``dim`` weight rows while the A
  stream streams tile ``t``'s ``m`` rows, so ``dim + (tiles - 1) * max(m, dim) + m`` with a
  row-major B in another scratchpad bank than A; ``tiles * (m + dim)`` when they share a bank)
  ``+ 2 * dim + MEM_READ_LATENCY - 1`` (the array's fill/drain and the scratchpad's read latency
  beyond one cycle); docs/architecture.md, "GEMM dataflow". Cycle-exact on the GEMM engine's
  block bench (every command without denied reads is checked against it).
* VECTOR: ``VEC_SETUP + rows`` (one accumulator row per cycle) ``+ VEC_PIPE`` (the unit's
  pipeline latency and its done cycle; matches make sim's PERF_VEC_BUSY within 1%).
* SOFTMAX, LAYERNORM, RMSNORM, LUT, EMUL: :func:`sfu_cycles` -- per row its passes over the
  segments and its scalar steps; cycle-exact on the SFU block bench.
* SIGNAL_EVENT / WAIT_EVENT / BARRIER / NOP: ``EVENT_ISSUE`` cycles of the issue unit
  (docs/queues.md "Issue unit"); engine commands pay ``DISPATCH`` cycles of issue, reported
  separately by :func:`summary`.

:func:`simulate` predicts a whole program's run time from these: the issue unit (one head per
cycle, SIGNAL and BARRIER after every earlier command's completion request) driving the in-order
engines, and the completion writer (``CPL_WRITE`` cycles per record, in request order);
:func:`summary`'s ``bound`` is that prediction (``lower_bound``: the busiest engine, the issue
unit or the completion writer).
"""
import functools
import math

from spec.chip import (FIFO_DEPTH, MEM_READ_LATENCY, SFU_DIV_CYCLES, SFU_LANES,
                       SFU_LUT_ENTRIES, SFU_SQRT_CYCLES, SFU_STAGES, VEC_PIPELINE_LATENCY)
from spec.descriptors import COMMANDS, DMA_FIELDS, GEMM_FIELDS, VEC_FIELDS, Engine, Opcode

from .dma import ceil_div

__all__ = ["command_cycles", "gemm_cycles", "gemm_stream_cycles", "gemm_banks_shared",
           "peer_cycles", "program_cycles", "simulate", "summary", "lower_bound", "tiling_cost",
           "ramp", "dma_beats"]

DMA_SETUP = 17                  # a DMA command's fixed cycles (fitted, with DMA_BEAT below)
GEMM_SETUP = 2
VEC_SETUP = 3 + MEM_READ_LATENCY        # accept, check, shift check; the last parameter's read
VEC_PIPE = VEC_PIPELINE_LATENCY + 1
#: issue unit cycles per descriptor: an engine command, a NOP / event / barrier (one head per cycle)
DISPATCH = 1
EVENT_ISSUE = 1
#: completion writer cycles per record (record burst + B, consumer write + B; make test's
#: dispatch_overhead: back-to-back NOPs 16 cycles per descriptor at host latency 1)
CPL_WRITE = 16


#: DMA cycles: DMA_SETUP per command and one cycle per bus beat (the R or W channel moves a
#: beat a cycle). Least-squares fit of PERF_DMA_LOAD_BUSY / PERF_DMA_STORE_BUSY per graph over
#: make bench's cost-model family of seed verif.graph_family.FIT_SEED (24 graphs, 8x8, host
#: latency 2, 8 bursts in flight; not the validation family): loads 17.9 + 1.000 per beat,
#: stores 17.1 + 1.007 per beat, median error 0.3 % and 0.4 % (a few graphs' counters run
#: higher, up to 3.6x for one conv's stores: not explained yet, and never on the critical path
#: there); make bench's decode runs (aligned one-beat rows) measure 1.02-1.05 per beat. The
#: model before (per row 0.23 + 0.82 per ``ceil(row_bytes / bus)`` beats for loads, max(1.5,
#: beats) for stores) missed the extra beat of an unaligned row -- most rows of a matrix whose
#: width is not a multiple of 8 -- and predicted the family's DMA busy time 32-41 % low.
DMA_BEAT = 1.0


def _residues(start, stride, n, bus):
    """{r: how many of ``start + i * stride`` (0 <= i < n) are r modulo ``bus``}; the sequence
    repeats every ``bus / gcd(stride, bus)`` terms."""
    period = bus // math.gcd(stride % bus, bus)
    full, rem = divmod(n, period)
    out = {}
    for i in range(min(period, n)):
        r = (start + i * stride) % bus
        out[r] = out.get(r, 0) + full + (i < rem)
    return out


def dma_beats(rows, planes, row_bytes, caps, offset=0, row_stride=0, plane_stride=0):
    """Bus beats of a DMA's host rows: row r of plane p starts at byte ``offset + p *
    plane_stride + r * row_stride`` from a beat-aligned base (every program buffer is) and
    touches ``ceil((start % bus + row_bytes) / bus)`` beats."""
    bus = caps.dma_data_bytes
    if row_bytes <= 0 or rows <= 0 or planes <= 0:
        return 0
    whole, part = divmod(row_bytes - 1, bus)       # beats - 1 of an aligned row; its last byte
    extra = 0                                      # rows whose start pushes the end a beat on
    for c, np_ in _residues(offset, plane_stride, planes, bus).items():
        extra += np_ * sum(nr for lo, nr in _residues(c, row_stride, rows, bus).items()
                           if lo + part >= bus)
    return rows * planes * (whole + 1) + extra


def mean_row_beats(row_bytes, stride, caps):
    """Bus beats of one ``row_bytes`` row of a matrix with rows ``stride`` bytes apart, averaged
    over its rows (what the tiling's cost estimate charges per loaded row)."""
    bus = caps.dma_data_bytes
    period = bus // math.gcd(stride % bus, bus)
    return dma_beats(period, 1, row_bytes, caps, 0, stride) / period


def dma_cycles(rows, planes, row_bytes, caps, store=False, beats=None):
    """Cycles of a DMA command; ``beats``: its bus beats (:func:`dma_beats`), default those of
    beat-aligned rows."""
    n = planes * rows
    if not row_bytes and not store:         # zero rows: no bus traffic, one local write a cycle
        return DMA_SETUP + n
    if beats is None:
        beats = n * max(1, ceil_div(row_bytes, caps.dma_data_bytes))
    return DMA_SETUP + int(DMA_BEAT * max(beats, n))


def gemm_stream_cycles(m, tiles, dim, b_transpose=False, shared_bank=False):
    """Cycles from a GEMM's first B row read to the cycle after its last A row read
    (hdl_gen/gemm_engine.py). Tile ``t``'s B rows start at ``B[t]``, its A rows at ``A[t]``:
    A waits for its tile's last B row (``A[t] >= B[t] + dim``) and the tile before
    (``A[t] >= A[t-1] + m``); B for the tile before (``B[t] >= B[t-1] + dim``) and for the A
    stream to leave the weight bank it loads (``B[t] >= A[t-2] + m``, and with a transposed B
    ``A[t-2] + m + dim - 2``: a column write reaches every row at once)."""
    if shared_bank:                     # the ports take turns, A first
        return tiles * (m + dim)
    if not b_transpose:
        return dim + (tiles - 1) * max(m, dim) + m
    return _transposed_stream(m, tiles, dim)


@functools.lru_cache(maxsize=4096)
def _transposed_stream(m, tiles, dim):
    b, a, a_prev = 0, dim, None         # this tile's B and A starts, the tile before's A
    for _ in range(tiles - 1):
        b_next = b + dim if a_prev is None else max(b + dim, a_prev + m + dim - 2)
        a_prev, b = a, b_next
        a = max(b + dim, a + m)
    return a + m


def gemm_cycles(m, k_tiles, n_tiles, caps, batches=1, b_transpose=False, shared_bank=False):
    """Busy cycles of a GEMM command: its checks, the streams (:func:`gemm_stream_cycles`), the
    array's drain."""
    return (GEMM_SETUP + gemm_stream_cycles(m, batches * n_tiles * k_tiles, caps.dim,
                                            bool(b_transpose), shared_bank)
            + 2 * caps.dim + MEM_READ_LATENCY - 1)


def gemm_banks_shared(f, caps):
    """Whether a GEMM command's A rows and B rows touch a common scratchpad bank (its fields
    ``f``; then the two read ports take turns)."""
    dim, rows = caps.dim, caps.spad_bank_rows
    bm1 = f.get("batches_m1", 0)
    a_end = f["a_addr"] + (f["k_tiles"] - 1) * f.get("a_kt_stride", 0) \
        + bm1 * f.get("a_batch_stride", 0) + f["m"] - 1
    steps, lin = ((f["k_tiles"], f["n_tiles"]) if f.get("b_transpose")
                  else (f["n_tiles"], f["k_tiles"]))
    b_end = f["b_addr"] + (steps - 1) * f.get("b_nt_stride", 0) \
        + bm1 * f.get("b_batch_stride", 0) + lin * dim - 1
    a_banks = range(f["a_addr"] // rows, a_end // rows + 1)
    b_banks = range(f["b_addr"] // rows, b_end // rows + 1)
    return max(a_banks.start, b_banks.start) < min(a_banks.stop, b_banks.stop)


SFU_SETUP = 7                   # accept, decode, three check cycles, the end's write-back
#: a pass's fixed cycles: its last segment's lane groups need not wait for a next segment, and
#: then the memory's latency, the segment register and the pipeline drain
SFU_PASS = MEM_READ_LATENCY + SFU_STAGES + 2
#: the softmax max pass's fixed cycles: its last segment's read latency and the pass switch
SFU_MAX_DRAIN = MEM_READ_LATENCY + 1
#: reads per segment of each SFU opcode's output pass, and its passes before it
SFU_OUT_READS = {"SOFTMAX": 1, "LAYERNORM": 3, "RMSNORM": 2, "LUT": 1, "EMUL": 2}


def sfu_cycles(opcode, rows, length, caps, zero_rows=0, lanes=SFU_LANES):
    """Cycles of an SFU command: per row its passes over the ``ceil(length / dim)`` segments (one
    read a cycle, then the pipeline's drain) and the row scalars: softmax's max and sum passes
    and its division, a norm's statistics pass, square root and division. ``zero_rows``: norm
    rows whose elements are all equal (no division; data-dependent, 0 in predictions);
    ``lanes``: the SFU's lanes (``KakiConfig.sfu_lanes``; a segment takes ``dim / lanes``
    cycles in them)."""
    name = Opcode(opcode).name
    segs, groups, drain = -(-length // caps.dim), caps.dim // lanes, SFU_PASS
    # a segment's reads, then its lane groups' turn before the next segment's first read
    one = segs * groups + drain
    out = segs * (SFU_OUT_READS[name] - 1 + groups) + drain
    if name == "SOFTMAX":       # the max pass reduces a whole segment a cycle, in no lane
        row = segs + SFU_MAX_DRAIN + one + 1 + SFU_DIV_CYCLES + out
    elif name in ("LAYERNORM", "RMSNORM"):
        row = one + SFU_SQRT_CYCLES + SFU_DIV_CYCLES + out
    else:
        row = out
    table = (SFU_LUT_ENTRIES // caps.dim) * groups + drain if name == "LUT" else 0
    return SFU_SETUP + table + rows * (1 + row) - zero_rows * (SFU_DIV_CYCLES - 1)


#: DMA_PEER: cycles from the command to its header's first beat, and after its last beat
PEER_SETUP = 3
#: the cluster's link: bytes a beat (hdl_gen/soc.py SocLink's default)
LINK_BYTES = 8


def peer_cycles(rows, acc, caps, nbytes=LINK_BYTES):
    """DMA_PEER at the link's rate (a credit loop that keeps up: depth >= 2 x latency + 1): the
    96-bit header, then each row in ``ceil(row bits / beat bits)`` beats (docs/cluster_hw.md).
    The receiver's add (``add``) is slower than the link (about 6 cycles a row); not modelled."""
    beat = 8 * nbytes
    row_bits = caps.dim * (32 if acc else 8)
    return PEER_SETUP + -(-96 // beat) + rows * -(-row_bits // beat)


def command_cycles(cmd, caps):
    """Predicted engine cycles of a ProgramCommand (or anything with ``opcode`` and ``fields``)."""
    row, f = COMMANDS[Opcode(cmd.opcode)], cmd.fields    # by the command table: engine and payload
    if row.engine is None:
        return EVENT_ISSUE
    if row.fields is DMA_FIELDS:
        addr = f.get("host_addr", 0)                 # buffer-relative: base + reloc offset
        offset = (addr if isinstance(addr, int) else 0) + sum(
            r.offset for r in getattr(cmd, "relocs", ()) if r.field == "host_addr")
        beats = dma_beats(f["rows"], f["planes"], f["row_bytes"], caps, offset,
                          f.get("host_row_stride", 0), f.get("host_plane_stride", 0))
        return dma_cycles(f["rows"], f["planes"], f["row_bytes"], caps,
                          row.engine == Engine.DMA_STORE, beats)
    if row.fields is GEMM_FIELDS:
        return gemm_cycles(f["m"], f["k_tiles"], f["n_tiles"], caps, f.get("batches_m1", 0) + 1,
                           f.get("b_transpose", 0), gemm_banks_shared(f, caps))
    if row.fields is VEC_FIELDS:
        return VEC_SETUP + f["rows"] + VEC_PIPE
    if row.engine == Engine.SFU:
        return sfu_cycles(row.opcode, f["rows"], f["length"], caps)
    if row.opcode == Opcode.DMA_PEER:
        return peer_cycles(f["rows"], f.get("acc", 0), caps)
    raise ValueError(f"no cost model for {row.opcode.name}")


def program_cycles(program, caps):
    """Predicted cycles of every command, aligned with ``program.commands``."""
    return [command_cycles(c, caps) for c in program.commands]


#: control-path latencies (docs/queues.md "Costs"): issue -> engine start (the dispatcher's
#: FIFO), engine done -> completion record requested (the retire FIFO, the window; what a
#: SIGNAL_EVENT waits for)
START_LAT = 3
RETIRE_LAT = 5

#: what :func:`simulate` does with a command: run it on an engine, wait, signal, drain (BARRIER)
_ENGINE, _WAIT, _SIGNAL, _BARRIER, _OTHER = range(5)
_KIND = {Opcode.WAIT_EVENT: _WAIT, Opcode.SIGNAL_EVENT: _SIGNAL, Opcode.BARRIER: _BARRIER}


def simulate(commands, cycles, fifo_depth=FIFO_DEPTH, timeline=None):
    """Predicted run time (cycles from the first issue to the last completion record written)
    of ``commands`` with per-command engine ``cycles``: a model of the issue unit — visiting the
    queues in turn, each queue in order until it blocks, ``DISPATCH`` cycles per engine command
    and ``EVENT_ISSUE`` per event/NOP/barrier, a SIGNAL_EVENT or BARRIER waiting until every
    earlier command of its queue has its completion request (engine done + ``RETIRE_LAT``), at
    most ``fifo_depth`` commands per engine in flight — the in-order engines, each opcode on the
    engine the command table names, and the completion writer (records of a queue requested in
    its order, written one at a time, ``CPL_WRITE`` each). A WAIT on a value no command here
    signals (e.g. a layer cut out of a program) counts as reached. ``timeline`` (a dict), when
    given, receives command index -> (start, end): an engine command's run on its engine, a
    control command's issue."""
    inf = float("inf")
    queues, top, info = {}, {}, []
    for i, c in enumerate(commands):            # what the loop needs of each command, once
        queues.setdefault(c.queue, []).append(i)
        op = Opcode(c.opcode)
        eng = COMMANDS[op].engine
        kind = _ENGINE if eng is not None else _KIND.get(op, _OTHER)
        ev = val = 0
        if kind in (_WAIT, _SIGNAL):
            ev, val = c.fields["event"], c.fields.get("value", 0)
            if kind == _SIGNAL:
                top[ev] = max(top.get(ev, 0), val)
        info.append((eng, kind, ev, val))
    order = sorted(queues)
    head = {q: 0 for q in queues}
    retired = {q: 0 for q in queues}          # when every issued command of q has its request
    requested = {}                            # command index -> its completion request
    eng_free, inflight, events = {}, {}, {}
    fw = end = 0
    while any(head[q] < len(queues[q]) for q in order):
        progressed, next_t = False, inf
        for q in order:
            qi, h = queues[q], head[q]
            while h < len(qi):
                i = qi[h]
                eng, kind, ev, v = info[i]
                if kind == _ENGINE:
                    fl = [d for d in inflight.get(eng, ()) if d + RETIRE_LAT > fw]
                    inflight[eng] = fl
                    if len(fl) >= fifo_depth:
                        next_t = min(next_t, min(fl) + RETIRE_LAT)
                        break
                    fw += DISPATCH
                    start = max(fw + START_LAT, eng_free.get(eng, 0))
                    done = eng_free[eng] = start + cycles[i]
                    fl.append(done)
                    if done + RETIRE_LAT > retired[q]:
                        retired[q] = done + RETIRE_LAT
                elif kind == _WAIT:
                    if v <= top.get(ev, 0) and events.get(ev, 0) < v:
                        break
                    fw += EVENT_ISSUE
                else:
                    if kind != _OTHER and retired[q] > fw:      # SIGNAL_EVENT, BARRIER
                        next_t = min(next_t, retired[q])
                        break
                    fw += EVENT_ISSUE
                    if kind == _SIGNAL and v > events.get(ev, 0):
                        events[ev] = v
                if fw > retired[q]:
                    retired[q] = fw
                requested[i] = retired[q]             # in queue order: behind the earlier ones
                if timeline is not None:
                    timeline[i] = (start, done) if kind == _ENGINE else (fw - EVENT_ISSUE, fw)
                h += 1
                progressed = True
            head[q] = h
        if not progressed:
            if next_t == inf:
                break                             # cannot progress (not schedulable)
            fw = max(fw, next_t)
    for t in sorted(requested.values()):          # the completion writer, one record at a time
        end = max(end, t) + CPL_WRITE
    return int(end)


def _totals(program, cycles):
    """(per-engine busy cycles, per-queue cycles, issue-unit cycles) of ``program``."""
    per_engine, per_queue, control = {}, {}, 0
    for c, cy in zip(program.commands, cycles):
        per_queue[c.queue] = per_queue.get(c.queue, 0) + cy
        eng = COMMANDS[Opcode(c.opcode)].engine
        if eng is not None:
            name = eng.name.lower()
            per_engine[name] = per_engine.get(name, 0) + cy
            control += DISPATCH
        else:
            control += EVENT_ISSUE
    return per_engine, per_queue, control


def lower_bound(program, cycles):
    """A bound :func:`simulate` never goes below: the busiest engine, the issue unit's work or
    the completion writer's, whichever is largest."""
    per_engine, _, control = _totals(program, cycles)
    return max([control, len(cycles) * CPL_WRITE] + list(per_engine.values()))


def summary(program, cycles):
    """Per-queue and per-engine totals and a lower bound on the run time
    (:func:`lower_bound`). Engines are keyed by their lower-case :class:`Engine` name
    (``dma_load``, ``dma_store``, ``gemm``, ``vec``)."""
    per_engine, per_queue, control = _totals(program, cycles)
    lower = lower_bound(program, cycles)
    predicted = max(lower, simulate(program.commands, cycles))
    return dict(engines=per_engine, queues=per_queue, control=control, commands=len(cycles),
                bound=predicted, lower_bound=lower, serial=sum(cycles))


def ramp(kc, kt, tm, ng, caps, a_stride=None, w_stride=None):
    """k-tiles of the first steps of the program's first tile (``tm`` rows, ``ng`` n-tiles), up
    to ``kc``: the first load is the pipeline fill nothing overlaps, so it should be short, but
    every next step's load must be done before the GEMM in front of it ends — a load starts once
    its buffer's previous GEMM retired (the first two right away) and its GEMM starts a SIGNAL ->
    WAIT -> dispatch after it. The smallest first step from which the steps can grow to ``kc``
    (or to the end of K); ``[]`` if none does. ``a_stride`` / ``w_stride``: the host bytes
    between A's and W's rows (K and N; default: beat-aligned rows)."""
    dim = caps.dim
    a_row, w_row = (DMA_BEAT * mean_row_beats(min(dim, s or dim), s or dim, caps)
                    for s in (a_stride, w_stride))
    load = tm * a_row + dim * ng * w_row + DMA_SETUP                  # per k-tile
    gemm = ng * max(tm, dim)
    to_gemm = RETIRE_LAT + 2 * EVENT_ISSUE + DISPATCH + START_LAT       # load done -> GEMM start
    to_load = RETIRE_LAT + 2 * EVENT_ISSUE + 2 * DISPATCH + START_LAT   # GEMM done -> next load
    for first in range(1, kc):
        sizes = [first, int((gemm * first - 2 * DISPATCH) // load)]
        while sizes[-1] < kc and sum(sizes) < kt and sizes[-1] > sizes[-2]:
            sizes.append(int((gemm * sizes[-1] - to_gemm - to_load) // load))
        if sizes[-1] > sizes[-2] or sum(sizes) >= kt:
            sizes = [min(x, kc) for x in sizes]
            while sum(sizes) > kt:                      # K ends inside the ramp
                sizes[-1] -= min(sizes[-1], sum(sizes) - kt)
            return [x for x in sizes if x]
    return []


def tiling_cost(m, k, n, tm, kc, ng, caps, queues=1, first=False, last=False, a_resident=False):
    """Predicted cycles of a GEMM tiled as (tm, kc, ng) on ``queues`` compute queues: the busiest
    of load / compute / epilogue+store / issue / completion records (the pipeline overlaps them), used by the
    tiling pass to choose tile sizes. On one compute queue every step leaves the SIGNAL -> WAIT
    -> GEMM dispatch gap on it; on two the other queue's GEMM covers it. The program's ``first``
    GEMM adds the pipeline fill (its first step's loads), the ``last`` the drain (its last tile's
    epilogue and store); between layers the neighbours' work overlaps them. ``a_resident``: an
    M tile's A is loaded once for all its N groups (``TiledGemm.a_resident``)."""
    dim = caps.dim
    kt, nt = ceil_div(k, dim), ceil_div(n, dim)
    mtiles, ngroups, ksteps = ceil_div(m, tm), ceil_div(nt, ng), ceil_div(kt, kc)
    steps, tiles = mtiles * ngroups * ksteps, mtiles * ngroups
    # a row of A (W, the output) is dim bytes at a stride of K (N) bytes: unaligned rows take
    # a beat more (dma_beats)
    a_row = DMA_BEAT * mean_row_beats(min(dim, k), k, caps)
    w_row = DMA_BEAT * mean_row_beats(min(dim, n), n, caps)
    load = ((1 if a_resident else ngroups) * m * kt * a_row   # A, or reloaded per n-group
            + mtiles * kt * dim * nt * w_row          # W, reloaded per m-tile
            + steps * 2 * DMA_SETUP)
    step_gap = RETIRE_LAT + 2 * EVENT_ISSUE + DISPATCH + START_LAT
    compute = (steps * (GEMM_SETUP + 2 * dim + dim - max(tm, dim) + tm)
               + mtiles * nt * kt * max(tm, dim)
               + (steps * step_gap if queues == 1 else 0))
    out_rows = min(m, tm) * min(nt, ng)
    per_tile = VEC_SETUP + VEC_PIPE + out_rows * (1 + w_row) + 2 * step_gap
    control = steps * (3 * DISPATCH + 4 * EVENT_ISSUE) + tiles * (3 * DISPATCH + 4 * EVENT_ISSUE)
    records = (steps + tiles) * 7 * CPL_WRITE      # each step and tile: 3 engine commands + 4 events
    # what the pipeline cannot overlap: the first step's loads before any GEMM (the ramp's
    # first step) and the last tile's epilogue and store after the last one
    k1 = (ramp(kc, kt, tm, min(ng, nt), caps, k, n) or [min(kc, kt)])[0] if first else 0
    fill = k1 * (tm * a_row + dim * min(ng, nt) * w_row) + 2 * DMA_SETUP * first
    drain = last * (per_tile - 2 * step_gap)
    return (max(load, compute, tiles * per_tile, control, records) + fill + drain
            + 0.01 * (load + compute + control))
