"""Compiler passes: fusion, buffer planning, tiling, scheduling + emission.

* :func:`fuse` (graph -> fused graph): every linear / matmul+requantize / conv2d becomes one GEMM
  whose epilogue also takes a following ReLU and residual add (when the intermediate has no other
  use and is not a graph output). Ops left alone (an add or ReLU that cannot be fused, an int8
  requantize) become an identity GEMM (``W = I``) with the op in its epilogue, so everything runs
  on the chip.
* :func:`plan_chip_buffers` (buffer planning, on chip): a static, bank-aware partition of the
  scratchpad and accumulator into double buffers reused by every layer — A in banks 0/1, W,
  output and residual in banks 2/3 (so the DMA fills one bank while the PE array reads the
  other) — and two accumulator regions for the layers' (bias, mult, shift) rows (layer j uses
  region j % 2, so the next layer's parameters load while this layer computes).
* :func:`tile` (fused graph -> tiled IR): per GEMM, the tile sizes (rows ``tm``, k-tiles per step
  ``kc``, n-tiles per tile ``ng``) that fit the buffers and minimise the cost model, and the tiles
  and steps in execution order (global numbering = event timeline values); the first tile's
  steps ramp up from a short one, the last tile is split in two.
* :func:`schedule` (tiled IR -> command IR): loads on queue 0, GEMMs + epilogues on one or two
  compute queues (consecutive steps on different ones, so a SIGNAL never idles the PE array),
  stores on queue 2, ordered only by program events (loaded / computed and epilogue done per
  compute queue / stored, as timelines of step and tile numbers); host buffers (inputs,
  outputs, weights, epilogue parameters, intermediates) become Program buffers and every host
  address a Reloc. Few, big descriptors (each costs ~130-260 firmware cycles): one VECTOR per
  tile for per-tensor requantization (the bias preloaded into C), one 3D load for a layer's
  parameters, a layer's W loads not held behind the previous layer's store, and single-tile
  layers feeding the next single-tile layer's A from the output buffer on chip
  (docs/compiler.md).
"""
from dataclasses import dataclass

import numpy as np

from spec.descriptors import Opcode
from driver.program import BufferSpec, Param, Program, ProgramCommand, Reloc

from . import cost
from .dma import ceil_div, tiled_dma
from .errors import CompileError
from .graph import SPECIAL_OPS
from .kv_cache import POOL, slot_param
from .ir import Buffer, FusedAttention, FusedGemm, FusedSpecial, Step, Tile, TiledGemm, TiledProgram
from .attention_parts import AttentionPartScheduling, decompose, heads_matmul_layer, tile_part
from .special_layers import (SpecialScheduling, fits_on_chip, param_rows, params_data,
                             tile_attention, tile_special)

__all__ = ["fuse", "plan_chip_buffers", "tile", "k_steps", "max_compute_queues", "schedule",
           "LOAD_Q", "COMPUTE_QS", "STORE_Q", "EV_LOADED", "EV_COMPUTED", "EV_EPILOGUE", "EV_STORED"]

LOAD_Q, STORE_Q = 0, 2
#: GEMM queues: step s runs on COMPUTE_QS[s % n]. A SIGNAL waits until its queue's GEMM retired;
#: with two queues the other one's next GEMM is already in the engine, so the PE array never
#: idles on it
COMPUTE_QS = (1, 3)
EV_LOADED, EV_STORED = 0, 3
#: one timeline per compute queue (a counter is set, not raised, by a SIGNAL: only one queue may
#: signal it): its computed steps and its tiles' epilogues done
EV_COMPUTED, EV_EPILOGUE = (1, 4), (2, 5)


# --------------------------------------------------------------------------------- fusion

def _identity(graph_node, x):
    from .graph import Tensor
    n = x.cols
    t = Tensor(f"{graph_node.name}.eye", (n, n), "int8", 1.0, 0, None, np.eye(n, dtype=np.int8))
    t.identity = True            # inserted by the compiler: its MACs are not the model's
    return t


def fuse(graph):
    """Graph -> list of :class:`FusedGemm` in execution order (graph.verify() first)."""
    from .graph import Tensor
    graph.verify()
    for t in graph.outputs:
        if t.producer.op in ("input", "const"):
            # the output buffer would be the input's own buffer (buffers are named by tensor):
            # a pass-through graph computes nothing on the chip
            raise CompileError(f"graph {graph.name!r}", f"output {t.name!r} is the graph "
                                                        f"{t.producer.op} itself: nothing to compute "
                                                        "(an output must be produced by an op)")
    outputs = {id(t) for t in graph.outputs}
    uses = {}
    for n in graph.nodes:
        for t in n.inputs:
            uses[id(t)] = uses.get(id(t), 0) + 1
    gemms, producer, pending = [], {}, {}

    def absorbable(t):
        g = producer.get(id(t))
        return g if g is not None and uses.get(id(t), 0) == 1 and id(t) not in outputs else None

    def emit(g):
        gemms.append(g)
        producer[id(g.output)] = g

    def retarget(g, node):
        g.nodes.append(node)
        del producer[id(g.output)]
        g.output = node.output
        producer[id(node.output)] = g

    for n in graph.nodes:
        a, out = n.attrs, n.output
        if n.op in ("input", "const"):
            continue
        if n.op == "linear":
            x, w = n.inputs[0], n.inputs[1]
            emit(FusedGemm(n.name, [n], x, w, a["bias"], a["mult"], a["shift"], a["zero_point"], out,
                           relu=a["relu"]))
        elif n.op == "conv2d":
            x = n.inputs[0]
            if x.producer is None or x.producer.op != "input":
                raise CompileError(n.where, f"input {x.name!r} is not a graph input: conv2d's im2col "
                                            "is a host preprocessing step of a graph input")
            kh, kw = a["kernel"]
            patches = Tensor(f"{x.name}.im2col.{n.name}", (out.rows, kh * kw * x.cols), "int8",
                             x.scale, x.zero_point)
            patches.im2col = dict(source=x, kernel=(kh, kw), stride=a["stride"], padding=a["padding"])
            w2 = Tensor(f"{n.inputs[1].name}.2d", a["weight2d"].shape, "int8", n.inputs[1].scale, 0,
                        None, a["weight2d"])
            emit(FusedGemm(n.name, [n], patches, w2, a["bias"], a["mult"], a["shift"],
                           a["zero_point"], out, relu=a["relu"]))
        elif n.op == "matmul":
            cons = graph.consumers(out)
            if id(out) in outputs or len(cons) != 1 or cons[0].op != "requantize" or uses[id(out)] != 1:
                raise CompileError(n.where, "unsupported int32 result: a matmul must feed exactly one "
                                            "requantize (the accumulator is not stored)")
            pending[id(out)] = n
        elif n.op == "requantize":
            x = n.inputs[0]
            if x.dtype == "int32":
                mm = pending.pop(id(x), None)
                if mm is None:
                    raise CompileError(n.where, f"int32 input {x.name!r} is not a matmul result")
                bias = mm.attrs["bias"]
                emit(FusedGemm(mm.name, [mm, n], mm.inputs[0], mm.inputs[1],
                               bias if bias.any() else None, a["mult"], a["shift"], a["zero_point"], out))
            else:
                emit(FusedGemm(n.name, [n], x, _identity(n, x), a["bias"], a["mult"], a["shift"],
                               a["zero_point"], out))
        elif n.op == "relu":
            x = n.inputs[0]
            g = absorbable(x)
            if g is not None and not g.relu and g.residual is None:
                g.relu = True
                retarget(g, n)
            else:
                c = x.cols
                emit(FusedGemm(n.name, [n], x, _identity(n, x), np.full(c, -x.zero_point, np.int32),
                               np.ones(c, np.int32), np.zeros(c, np.int32), x.zero_point, out, relu=True))
        elif n.op == "maxred":
            # an identity GEMM whose epilogue reduces the rows (VECTOR ops.maxred): one M tile
            x = n.inputs[0]
            c = x.cols
            emit(FusedGemm(n.name, [n], x, _identity(n, x), np.full(c, -x.zero_point, np.int32),
                           np.ones(c, np.int32), np.zeros(c, np.int32), x.zero_point, out,
                           maxred=True))
        elif n.op == "add":
            lhs, rhs = n.inputs
            for x, other in ((lhs, rhs), (rhs, lhs)):
                g = absorbable(x)
                if g is not None and g.residual is None and not g.maxred and other is not x:
                    g.residual = other
                    retarget(g, n)
                    # the residual may be computed after g: g's only use is this add, so g can
                    # move to here, where every operand is available
                    gemms.remove(g)
                    gemms.append(g)
                    break
            else:
                c = lhs.cols
                emit(FusedGemm(n.name, [n], lhs, _identity(n, lhs), np.full(c, -lhs.zero_point, np.int32),
                               np.ones(c, np.int32), np.zeros(c, np.int32), lhs.zero_point, out,
                               residual=rhs))
        elif n.op in SPECIAL_OPS:
            gemms.append(FusedSpecial(n.name, [n], n.op, n.inputs[0],
                                      n.inputs[1] if n.op == "mul" else None, out, a))
        elif n.op == "attention":
            gemms.append(FusedAttention(n.name, [n], *n.inputs, out, a))
        elif n.op == "heads_matmul":
            gemms.append(heads_matmul_layer(n))
        else:
            raise CompileError(n.where, f"unsupported op {n.op!r}")
    for g in gemms:
        if g.kind == "gemm" and g.bias is not None and not g.bias.any():
            g.bias = None
    return gemms


# --------------------------------------------------------------------------------- buffer planning

#: scratchpad partitions (fractions of 32, in placement order). "banked": with 4 banks
#: a0 = bank 0, a1 = bank 1, b0/o0/r0 = bank 2, b1/o1/r1 = bank 3 (the DMA fills one bank while
#: the PE array reads another). "wide_w": small A buffers and big W buffers, so
#: weight-streaming layers (small M, e.g. an MLP's batch) take fewer, bigger k-steps (each step
#: costs firmware work and DMA setup; on one compute queue also a ~800-cycle SIGNAL -> WAIT ->
#: dispatch gap).
LAYOUTS = {
    "banked": [("a0", 8), ("a1", 8), ("b0", 4), ("o0", 2), ("r0", 2), ("b1", 4), ("o1", 2), ("r1", 2)],
    "wide_w": [("a0", 2), ("a1", 2), ("b0", 10), ("o0", 2), ("r0", 2), ("b1", 10), ("o1", 2), ("r1", 2)],
}


def plan_chip_buffers(caps, param_rows, layout="banked", where="buffer planning"):
    """Static on-chip buffers: ``{name: Buffer}`` (see the module docstring and LAYOUTS).
    ``where``: the node whose parameters need ``param_rows`` rows (named by a CompileError)."""
    dim = caps.dim
    total, bank = caps.spad_rows, caps.spad_bank_rows
    parts = LAYOUTS[layout]
    unit = total // 32
    if unit < dim:
        raise CompileError("buffer planning", f"scratchpad of {total} rows is too small for dim {dim}")
    bufs, cur = {}, 0
    for name, f in parts:
        rows = f * unit
        if name[0] == "b":
            rows -= rows % dim
        bufs[name] = Buffer(name, "spad", cur, rows, cur // bank)
        cur += f * unit
    # accumulator: two parameter buffers (layer j uses p{j % 2}, so the next layer's parameters
    # load while this one's epilogues run) and the two C buffers, one per bank when possible,
    # the parameters in c1's bank (a program's first tile, in c0, runs while its first layer's
    # parameters load)
    pr = max(param_rows, 1)
    abank = caps.acc_bank_rows
    if caps.acc_banks >= 2:
        crows = abank - 2 * pr
        bases, pbase = (0, abank + 2 * pr), abank
    else:
        crows = (caps.acc_rows - 2 * pr) // 2
        bases, pbase = (2 * pr, 2 * pr + crows), 0
    if crows < 1:
        have = abank if caps.acc_banks >= 2 else caps.acc_rows
        raise CompileError(where, f"buffer planning: its epilogue parameters (bias, mult, shift: 3 "
                                  f"rows per {dim}-channel n-tile) need 2 x {param_rows} accumulator "
                                  f"rows, more than the {have} available, leaving none for the C "
                                  f"tiles")
    bufs["p0"] = Buffer("p0", "acc", pbase, pr, pbase // abank)
    bufs["p1"] = Buffer("p1", "acc", pbase + pr, pr, pbase // abank)
    for i, base in enumerate(bases):
        bufs[f"c{i}"] = Buffer(f"c{i}", "acc", base, crows, base // abank)
    return bufs


# --------------------------------------------------------------------------------- tiling

def _candidates(n, limit):
    return sorted({ceil_div(n, j) for j in range(1, n + 1)} & set(range(1, limit + 1)), reverse=True)[:48]


def max_compute_queues(caps):
    """GEMM queues the schedule can alternate between: two when the chip has a fourth queue
    (``caps.queues`` 0 = not reported, as in capabilities built from a config: four) and two
    accumulator banks (with one, the DMA initialising a tile's C would wait behind the GEMMs
    accumulating into the other C buffer: a DMA into a bank waits while a GEMM writes it)."""
    return 2 if (caps.queues or 4) >= 4 and caps.acc_banks >= 2 else 1


def _best_tiling(m, k, n, caps, cap_a, cap_b, cap_o, nq, full_m=False, first=False, last=False):
    dim = caps.dim
    kt, nt = ceil_div(k, dim), ceil_div(n, dim)
    best = None
    for kc in _candidates(kt, min(0xFFF, cap_b // dim)):
        for ng in _candidates(nt, min(0xFFF, cap_b // (kc * dim))):
            tm = min(m, cap_a // kc, cap_o // ng, 0xFFFF)
            if tm < 1 or (full_m and tm < m):
                continue
            c = cost.tiling_cost(m, k, n, tm, kc, ng, caps, nq, first, last,
                                 a_resident=tm * kt <= cap_a)
            if best is None or c < best[0]:
                best = (c, tm, kc, ng)
    return best and best[1:]


def choose_tiling(g, caps, bufs, nq, cache=None, first=False, last=False):
    """(tm, kc, ng) for a GEMM: the fitting choice with the lowest predicted cost
    (:func:`cost.tiling_cost`; ``first`` / ``last``: the program's first / last GEMM). ``cache``:
    a dict shared by calls with the same arguments (compile_graph's variants)."""
    cap_a, cap_b = bufs["a0"].rows, bufs["b0"].rows
    cap_o = min(bufs["o0"].rows, bufs["r0"].rows, bufs["c0"].rows)
    key = (g.m, g.k, g.n, caps, cap_a, cap_b, cap_o, nq, g.maxred, first, last)
    cache = {} if cache is None else cache
    if key not in cache:
        cache[key] = _best_tiling(*key)
    best = cache[key]
    if best is None and g.maxred:
        raise CompileError(g.where, f"max-reduce over {g.m} rows x {g.n} channels: all rows must be "
                                    f"in one tile, and no tile of {g.m} rows fits the buffers "
                                    f"(A {cap_a}, C/out {cap_o} rows per buffer, "
                                    f"limit {min(cap_a, cap_o, 0xFFFF)} rows)")
    if best is None:
        raise CompileError(g.where, f"{g.m}x{g.k}x{g.n} GEMM: no tile fits the buffers "
                                    f"(A {cap_a}, W {cap_b}, C/out {cap_o} rows)")
    return best


def k_steps(k, kc, dim, ramp=()):
    """A tile's step boundaries along K: the ``ramp`` step sizes (k-tiles) first, then at most
    ``kc`` k-tiles per step, split evenly."""
    kt = ceil_div(k, dim)
    sizes = list(ramp)
    rest = kt - sum(sizes)
    n = ceil_div(rest, kc)
    sizes += [rest // n + (i < rest % n) for i in range(n)]
    ends = np.cumsum(sizes) * dim
    return [0] + [min(k, int(e)) for e in ends]


def _rects(g, tm, ng, dim, taper):
    """The GEMM's output tiles ``(m0, m1, n0, n1)``, M-major. ``taper``: the last one is split in
    two along N, halving the epilogue and store left after the last GEMM — not a single tile:
    that would double the GEMM's fixed per-tile work (A load, dispatches, event round trips),
    which the cost model underestimates for short GEMMs (make bench 64^3: predicted 4% faster,
    measured 6% slower)."""
    rects = [(m0, min(g.m, m0 + tm), n0, min(g.n, n0 + ng * dim))
             for m0 in range(0, g.m, tm) for n0 in range(0, g.n, ng * dim)]
    m0, m1, n0, n1 = rects[-1]
    half = ceil_div(ceil_div(n1 - n0, dim), 2) * dim
    if taper and len(rects) > 1 and n0 + half < n1:
        rects[-1:] = [(m0, m1, n0, n0 + half), (m0, m1, n0 + half, n1)]
    return rects


def tile(gemms, caps, layout="banked", ramp=True, taper=True, queues=None, cache=None, ends=False):
    """Fused graph -> :class:`TiledProgram` (buffers planned, tiles and steps numbered).
    ``ramp``: the program's first tile starts with short, growing steps (:func:`cost.ramp`);
    ``taper``: its last tile is split in two along N (:func:`_rects`); ``ends``: the first
    GEMM's tiling counts the pipeline fill, the last one's the drain (:func:`choose_tiling`);
    ``queues``: compute
    queues to use (default :func:`max_compute_queues`; one saves the C-initialising DMAs, which
    matters only when the firmware's dispatch work, not the engines, sets the pace); ``cache``:
    see :func:`choose_tiling`."""
    dim = caps.dim
    nq = queues or max_compute_queues(caps)
    if not gemms:
        raise CompileError("tiling", "no GEMM to tile (the graph computes nothing)")
    widest = max(gemms, key=lambda g: param_rows(g, dim))
    what = (f"{widest.m}x{widest.k}x{widest.n} GEMM, N={widest.n}" if widest.kind == "gemm"
            else f"{widest.k} channels")
    bufs = plan_chip_buffers(caps, param_rows(widest, dim), layout, f"{widest.where} ({what})")
    layers = []
    for g in gemms:      # an attention whose keys do not fit goes through host memory
        fused = g.kind != "attention" or fits_on_chip(g, caps, bufs)
        if not fused and getattr(g.k, "paged", None) is not None:
            raise CompileError(g.where, f"paged attention over {g.sk} keys: K and V of one head "
                                        f"group do not fit on chip (the paged KV cache needs "
                                        f"the fused attention layer)")
        layers += [g] if fused else decompose(g)
    out, step, tile_no = [], 0, 0
    for j, g in enumerate(layers):
        if g.kind != "gemm":
            make = {"attention": tile_attention, "sfu": tile_special}.get(g.kind, tile_part)
            tg = make(g, caps, bufs, f"p{j % 2}", bufs[f"p{j % 2}"].base, tile_no, step)
            tile_no += len(tg.tiles)
            step += sum(len(t.steps) for t in tg.tiles)
            out.append(tg)
            continue
        tm, kc, ng = choose_tiling(g, caps, bufs, nq, cache, first=ends and not out,
                                   last=ends and g is layers[-1])
        tg = TiledGemm(g, tm, kc, ng, f"p{j % 2}", bufs[f"p{j % 2}"].base,
                       a_resident=tm * ceil_div(g.k, dim) <= bufs["a0"].rows)
        for m0, m1, n0, n1 in _rects(g, tm, ng, dim, taper and g is gemms[-1]):
            t = Tile(tile_no, m0, m1, n0, n1)
            tile_no += 1
            first = ()
            if ramp and step == 0:
                first = cost.ramp(kc, ceil_div(g.k, dim), t.rows, ceil_div(n1 - n0, dim), caps,
                                  g.k, g.n)
            bounds = k_steps(g.k, kc, dim, first)
            for k0, k1 in zip(bounds, bounds[1:]):
                t.steps.append(Step(step, k0, k1, k0 == 0, k1 == g.k))
                step += 1
            tg.tiles.append(t)
        out.append(tg)
    return TiledProgram(caps, bufs, out, nq)


# --------------------------------------------------------------------------------- scheduling

class HostAddr:
    """A relocatable host address (buffer + offset) that DMA helpers can offset; ``param``: a
    launch parameter added to it (a KV-cache page, compiler/kv_cache.py), or None."""

    def __init__(self, buffer, offset=0, param=None):
        self.buffer, self.offset, self.param = buffer, offset, param

    def __add__(self, k):
        return HostAddr(self.buffer, self.offset + k, self.param)


@dataclass(frozen=True)
class PlusParam:
    """A payload field's value ``value`` plus launch parameter ``param`` (e.g. a causal mask's
    offset: the position of a sequence's first new token)."""
    value: int
    param: str


def _program_command(queue, cmd, note, tag):
    fields, relocs, params = {}, [], []
    for k, v in cmd.fields.items():
        if isinstance(v, HostAddr):
            relocs.append(Reloc(k, v.buffer, v.offset))
            if v.param is not None:
                params.append(Param(k, v.param))
        elif isinstance(v, PlusParam):
            fields[k] = v.value
            params.append(Param(k, v.param))
        else:
            fields[k] = v
    return ProgramCommand(queue, cmd.opcode, fields, tuple(relocs), cmd.irq, tag, note,
                          tuple(params))


class _Emitter:
    def __init__(self, program):
        self.p = program

    def add(self, queue, opcode_or_cmd, note="", **fields):
        from .dma import Command
        cmd = opcode_or_cmd if isinstance(opcode_or_cmd, Command) else Command(opcode_or_cmd, fields)
        self.p.add(_program_command(queue, cmd, note, len(self.p.commands)))

    def wait(self, queue, event, value, note=""):
        if value > 0:
            self.add(queue, Opcode.WAIT_EVENT, note, event=event, value=value)

    def signal(self, queue, event, value, note=""):
        self.add(queue, Opcode.SIGNAL_EVENT, note, event=event, value=value)


def schedule(tiled, name, graph_inputs, graph_outputs, bias_in_c="auto", forward=True):
    """Tiled IR -> :class:`driver.program.Program` (the command IR's content).

    Loads on queue 0, each step's GEMM on a compute queue (:data:`COMPUTE_QS`; with two, the
    other one than the previous step's, see ``_Scheduler.pick_queue``) with the tile's epilogue
    after its last step, stores on queue 2.

    ``bias_in_c``: for a GEMM with per-tensor requantization (``mult``/``shift`` the same for
    every channel) and a bias, preload the bias into the C tile with one DMA so that one VECTOR
    covers the whole tile — ``True`` always, ``False`` never (one VECTOR per n-tile), ``"auto"``
    when the VECTOR dispatches it saves cost more than the extra DMA. Otherwise a tile's first
    step overwrites C, and its second step follows it on its compute queue (see
    ``_Scheduler.pick_queue``), so the first reaches the in-order GEMM engine before every other.

    ``forward``: when a single-tile GEMM's A is the output of the single-tile GEMM just before
    it, its GEMMs read A straight from that GEMM's output buffer (the int8 n-tiles, ``mr`` rows
    apart, are exactly the k-tile layout A needs) instead of waiting for the store and reloading
    it; the output is still stored. The buffer stays intact until then: the next epilogue into it
    (tile t + 2) waits for every earlier step on both compute queues."""
    return _Scheduler(tiled, name, graph_inputs, graph_outputs, bias_in_c, forward).run()


class _Layer:
    """Per-GEMM scheduling state: host buffer names, what the epilogue does, pending waits."""

    def __init__(self, tg, names, fwd_src, w_wait, a_wait, bias_c, uniform):
        self.tg, self.g = tg, tg.gemm
        self.a, self.w, self.r, self.o, self.params = names
        self.fwd_src = fwd_src          # the producer tile whose output buffer is A, or None
        self.w_wait, self.a_wait = w_wait, a_wait   # EV_STORED values to wait for before W / A
        self.bias_c, self.uniform = bias_c, uniform
        self.first_step = tg.tiles[0].steps[0].index
        self.slots = None               #: operand slots of its steps (attention_slots)
        #: the parameters load right after the first step's operands are signalled (not before
        #: the first GEMM): needs a second step, whose loaded signal then covers them
        self.param_late = sum(len(t.steps) for t in tg.tiles) > 1


class _Scheduler(SpecialScheduling, AttentionPartScheduling):
    def __init__(self, tiled, name, graph_inputs, graph_outputs, bias_in_c, forward):
        self.tiled, self.bufs, self.dim = tiled, tiled.buffers, tiled.caps.dim
        self.cqs = COMPUTE_QS[:tiled.compute_queues]
        n = len(self.cqs)
        events = 1 + max((EV_LOADED, EV_STORED) + EV_COMPUTED[:n] + EV_EPILOGUE[:n])
        # per compute queue, in programs with attention: its steps whose scores Q·Kᵀ are done
        # (their K buffer is free before the step is)
        if any(tg.gemm.kind == "attention" for tg in tiled.gemms):
            self.ev_scored, events = tuple(range(events, events + n)), events + n
        self.p = Program(name, events=events)
        self.em = _Emitter(self.p)
        self.outs = {id(t) for t in graph_outputs}
        self.ins = {id(t) for t in graph_inputs}
        self.bias_in_c, self.forward = bias_in_c, forward
        self.last_tile = {}             # id(tensor) -> global index of the last tile storing it
        self.queue_of = {}              # step index -> its compute queue
        self.epi_queue = {}             # tile index -> the compute queue of its epilogue
        self.o_readers = {0: [], 1: []}  # o buffer -> forwarded steps reading it since its epilogue
        self.waited = set()             # (queue, tile): queues that waited for a tile's epilogue
        # A buffer -> (owner, {queue: latest step}): the resident-A GEMM steps reading it since
        # its owner (layer, M tile) loaded it; every other step reads a{step % 2}
        self.a_reads = {0: (None, {}), 1: (None, {})}
        self.resident_steps = set()

    def run(self):
        for j, tg in enumerate(self.tiled.gemms):
            if tg.gemm.kind != "gemm":
                L = self.special_layer(tg)
                for t in tg.tiles:
                    if tg.gemm.kind.startswith("attention_"):
                        self.part_tile(L, j, t)
                    else:
                        self.special_loads(L, j, t, t.steps[0], t is tg.tiles[0])
                        self.special_compute(L, t, t.steps[0])
                    self.last_tile[id(L.g.output)] = t.index
                continue
            L = self.layer(j, tg)
            for t in tg.tiles:
                for s in t.steps:
                    params = s is tg.tiles[0].steps[0]
                    self.loads(L, j, t, s, params, late=params and L.param_late)
                    self.gemm(L, t, s)
                self.epilogue(L, t)
                self.last_tile[id(L.g.output)] = t.index
        # the last command of each queue raises the completion interrupt
        last = {c.queue: i for i, c in enumerate(self.p.commands)}
        for i in last.values():
            c = self.p.commands[i]
            self.p.commands[i] = ProgramCommand(c.queue, c.opcode, c.fields, c.relocs, True, c.tag, c.note)
        return self.p

    def host_buffer(self, t):
        paged = getattr(t, "paged", None)
        if paged is not None:           # rows of the KV cache (compiler/kv_cache.py)
            if POOL not in self.p.buffers:
                self.p.add_buffer(BufferSpec(POOL, paged.layout.pool_bytes, 64, "inout"))
            return POOL
        if t.name not in self.p.buffers:
            if t.is_const:
                role, init = "const", np.ascontiguousarray(t.data).tobytes()
            elif id(t) in self.outs:
                role, init = "output", None
            elif id(t) in self.ins or getattr(t, "im2col", None) is not None:
                role, init = "input", None
            else:
                role, init = "scratch", None
            self.p.add_buffer(BufferSpec(t.name, t.nbytes, 64, role, init))
        return t.name

    def special_layer(self, tg):
        """A special-function or attention layer's scheduling state (operands' host buffers,
        the stores to wait for before loading them, its parameter and table buffers)."""
        g = tg.gemm
        ops = [self.host_buffer(t) for t in g.operands()]
        L = _Layer(tg, (ops[0], ops[1] if len(ops) > 1 else None, ops[2] if len(ops) > 2 else None,
                        self.host_buffer(g.output), None), None, 0,
                   max([self.last_tile[id(t)] + 1 for t in g.operands() if id(t) in self.last_tile],
                       default=0), False, True)
        if g.kind == "attention":
            L.q, L.k, L.v = ops
        data = params_data(g, self.dim)
        if data is not None:
            L.params, L.param_rows = f"{g.name}.params", data.shape[0]
            self.p.add_buffer(BufferSpec(L.params, data.nbytes, 64, "const", data.tobytes()))
        if g.kind == "sfu" and g.op == "lut":
            L.table = f"{g.name}.table"
            table = np.asarray(g.attrs["table"], np.int8)
            self.p.add_buffer(BufferSpec(L.table, table.nbytes, 64, "const", table.tobytes()))
        return L

    def layer(self, j, tg):
        g, dim = tg.gemm, self.dim
        names = (self.host_buffer(g.a), self.host_buffer(g.w),
                 self.host_buffer(g.residual) if g.residual is not None else None,
                 self.host_buffer(g.output), f"{g.name}.params")
        prev = self.tiled.gemms[j - 1] if j else None
        fwd = (self.forward and prev is not None and prev.gemm.kind == "gemm"
               and len(prev.tiles) == 1 and len(tg.tiles) == 1
               and g.a is prev.gemm.output and g.w is not g.a)
        # RAW through host memory: wait until every producer of an operand has stored it. Only a
        # computed W must be waited for before the layer's first load; the activation (A and
        # residual) wait goes right before the first A load, so this layer's first W chunk loads
        # while the previous layer finishes its epilogue and store.
        lt = self.last_tile
        w_deps = [lt[id(g.w)]] if id(g.w) in lt else []
        a_deps = [lt[id(t)] for t in (g.a, g.residual)
                  if t is not None and id(t) in lt and not (fwd and t is g.a and t is not g.residual)]
        # one VECTOR per tile when the requantization is per-tensor (mult/shift the same for every
        # channel) and the bias (if any) is in C: the epilogue then needs no per-n-tile rows
        uniform = bool((g.mult == g.mult[0]).all() and (g.shift == g.shift[0]).all())
        bias_c = uniform and g.bias is not None and self.bias_in_c is not False
        if bias_c and self.bias_in_c == "auto":
            ng = ceil_div(min(g.n, tg.ng * dim), dim)
            dma = cost.dma_cycles(min(g.m, tg.tm), ng, 4 * dim, self.tiled.caps) + cost.DISPATCH
            bias_c = (ng - 1) * cost.DISPATCH > dma
        params = np.stack([g.bias if g.bias is not None else np.zeros(g.n, np.int32), g.mult, g.shift])
        self.p.add_buffer(BufferSpec(names[4], params.nbytes, 64, "const",
                                     params.astype(np.int32).tobytes()))
        return _Layer(tg, names, prev.tiles[0] if fwd else None,
                      max(w_deps) + 1 if w_deps else 0, max(a_deps) + 1 if a_deps else 0, bias_c,
                      uniform)

    # ---- queue 0: a step's operands into the free half of the double buffer
    def loads(self, L, j, t, s, params, late=False):
        em, g, dim, bufs = self.em, L.g, self.dim, self.bufs
        mr, sb = t.rows, s.buf
        kcs, ngs = ceil_div(s.k1 - s.k0, dim), ceil_div(t.n1 - t.n0, dim)
        if L.w_wait:
            em.wait(LOAD_Q, EV_STORED, L.w_wait, f"{g.name}: W stored")
            L.w_wait = 0
        if s.first and L.bias_c:      # before the operand buffers are free: while step s - 2 runs
            self.wait_epilogue(LOAD_Q, t.index - 2, f"{g.name}: c{t.buf} free")
            self.c_init(L, t)
        if s.index >= 2:                 # a{sb}/b{sb} are free once step s - 2 is done
            em.wait(LOAD_Q, self.computed(s.index - 2), s.index - 1, f"{g.name}: a{sb}/b{sb} free")
        b_buf = bufs[f"b{sb}"].base
        for c in tiled_dma(Opcode.DMA_LOAD, host_addr=HostAddr(L.w, s.k0 * g.n + t.n0),
                           host_row_stride=g.n, rows=s.k1 - s.k0, cols=t.n1 - t.n0, elem_bytes=1,
                           local_addr=b_buf, local_plane_stride=kcs * dim, local_row_stride=1, dim=dim):
            em.add(LOAD_Q, c, f"{g.name}: load W[{s.k0}:{s.k1}, {t.n0}:{t.n1}]")
        if L.a_wait:
            em.wait(LOAD_Q, EV_STORED, L.a_wait, f"{g.name}: operands stored")
            L.a_wait = 0
        resident = self.a_resident(L)
        if L.fwd_src is None and (not resident or t.n0 == 0):    # resident: the M range's first tile
            buf = self.a_home(L, t) if resident else sb
            self.a_free(buf, s, (j, t.m0) if resident else None, f"{g.name}: a{buf} free")
            local = bufs[f"a{buf}"].base + ((s.k0 // dim) * mr if resident else 0)
            for c in tiled_dma(Opcode.DMA_LOAD, host_addr=HostAddr(L.a, t.m0 * g.k + s.k0),
                               host_row_stride=g.k, rows=mr, cols=s.k1 - s.k0, elem_bytes=1,
                               local_addr=local, local_plane_stride=mr,
                               local_row_stride=1, dim=dim):
                em.add(LOAD_Q, c, f"{g.name}: load A[{t.m0}:{t.m1}, {s.k0}:{s.k1}]")
        if kcs * dim > s.k1 - s.k0:          # W's K edge: zero rows
            em.add(LOAD_Q, Opcode.DMA_LOAD, f"{g.name}: zero W K-edge", host_addr=0,
                   host_row_stride=0, host_plane_stride=0, row_bytes=0,
                   rows=kcs * dim - (s.k1 - s.k0), planes=ngs, local_addr=b_buf + (s.k1 - s.k0),
                   local_row_stride=1, local_plane_stride=kcs * dim)
        if s.last and L.r is not None:
            self.wait_epilogue(LOAD_Q, t.index - 2, f"{g.name}: r{t.buf} free")
            for c in tiled_dma(Opcode.DMA_LOAD, host_addr=HostAddr(L.r, t.m0 * g.n + t.n0),
                               host_row_stride=g.n, rows=mr, cols=t.n1 - t.n0, elem_bytes=1,
                               local_addr=bufs[f"r{t.buf}"].base, local_plane_stride=mr,
                               local_row_stride=1, dim=dim):
                em.add(LOAD_Q, c, f"{g.name}: load residual [{t.m0}:{t.m1}, {t.n0}:{t.n1}]")
        if params and not late:
            self.param_load(L, j)
        em.signal(LOAD_Q, EV_LOADED, s.index + 1, f"{g.name}: step {s.index} loaded")
        if late:
            self.param_load(L, j)

    def c_init(self, L, t):
        """C tile = the bias rows (one 3D DMA, ``host_row_stride = 0`` repeats the row over the
        tile's rows, one plane per n-tile): every GEMM step then accumulates."""
        g, dim, mr = L.g, self.dim, t.rows
        for c in tiled_dma(Opcode.DMA_LOAD, host_addr=HostAddr(L.params, 4 * t.n0),
                           host_row_stride=0, rows=mr, cols=t.n1 - t.n0, elem_bytes=4,
                           local_addr=self.bufs[f"c{t.buf}"].base, local_plane_stride=mr,
                           local_row_stride=1, dim=dim, acc=1):
            self.em.add(LOAD_Q, c, f"{g.name}: bias into C tile {t.index}")

    def param_load(self, L, j):
        """The layer's [bias; mult; shift] int32 rows (one 3D load: plane = n-tile, its 3 rows)
        into the parameter buffer the GEMM two layers back used, once its epilogues are done.
        Loaded with the layer's first step, after its operands, or (``param_late``) after their
        loaded signal, so the first GEMM does not wait for them: a DMA into an accumulator bank
        waits while a GEMM accumulates into that bank, so the parameter buffers share a bank
        with c1, not with c0, the first tile's (:func:`plan_chip_buffers`)."""
        g, em = L.g, self.em
        if j >= 2:
            self.wait_epilogue(LOAD_Q, self.tiled.gemms[j - 2].tiles[-1].index,
                               f"{g.name}: {L.tg.param_buf} free")
        for c in tiled_dma(Opcode.DMA_LOAD, host_addr=HostAddr(L.params, 0), host_row_stride=4 * g.n,
                           rows=3, cols=g.n, elem_bytes=4, local_addr=L.tg.param_base,
                           local_plane_stride=3, local_row_stride=1, dim=self.dim, acc=1):
            em.add(LOAD_Q, c, f"{g.name}: load bias/mult/shift")

    # ---- A buffers
    @staticmethod
    def a_resident(L):
        """The layer keeps each M tile's whole A on chip (``TiledGemm.a_resident``)."""
        return L.tg.a_resident and L.fwd_src is None

    @staticmethod
    def a_home(L, t):
        """The A buffer of a resident layer's tile: by M tile, so the next M tile's A loads
        while this one's N groups multiply."""
        return (t.m0 // L.tg.tm) % 2

    def a_free(self, buf, s, owner, what):
        """Before step s's load into A buffer ``buf`` (for ``owner``, a resident layer's
        (layer, M tile), else None): the queue waits for the steps still reading it — the
        resident steps of another owner, and the last non-resident step of its parity (unless
        step s - 2's wait, just emitted, covers it)."""
        prev, reads = self.a_reads[buf]
        need = {} if owner is not None and prev == owner else dict(reads)
        p = next((i for i in range(s.index - 2 + (s.index - buf) % 2, -1, -2)
                  if i not in self.resident_steps), None)
        covered = s.index >= 2 and self.queue_of.get(p) == self.queue_of[s.index - 2] \
            and p <= s.index - 2
        if p is not None and not covered:
            need[self.queue_of[p]] = max(need.get(self.queue_of[p], -1), p)
        for q, i in sorted(need.items()):
            self.em.wait(LOAD_Q, EV_COMPUTED[self.cqs.index(q)], i + 1, what)
        if owner is None or prev != owner:
            self.a_reads[buf] = (owner, {})

    # ---- compute queues: multiply
    def computed(self, step):
        """The event counting the computed steps of ``step``'s compute queue."""
        return EV_COMPUTED[self.cqs.index(self.queue_of[step])]

    def pick_queue(self, L, t, s):
        """The other compute queue than step s - 1's, so one queue's SIGNAL never idles the
        engine — except for a tile's second step when its first overwrites C (no bias in C): on
        the first step's queue, it reaches the in-order GEMM engine after it (every later step
        loads into a buffer freed by one of these two, so it does too), at the cost of one
        SIGNAL -> WAIT -> dispatch gap per tile instead of a DMA zeroing C; and a GEMM reading
        the previous layer's output on chip cannot start before that layer's epilogue anyway: it
        follows it on the epilogue's queue."""
        if L.fwd_src is not None and s.index == L.first_step:
            return self.epi_queue[L.fwd_src.index]
        prev = self.queue_of.get(s.index - 1, self.cqs[-1])
        if not L.bias_c and s.index == t.steps[0].index + 1:
            return prev
        return self.cqs[(self.cqs.index(prev) + 1) % len(self.cqs)]

    def wait_epilogue(self, q, t, what):
        """Queue q waits until tile t's epilogue is done, unless that epilogue ran on q earlier
        (queue order) or q already waited for it."""
        if t >= 0 and self.epi_queue.get(t) != q and (q, t) not in self.waited:
            self.em.wait(q, EV_EPILOGUE[self.cqs.index(self.epi_queue[t])], t + 1, what)
            self.waited.add((q, t))

    def gemm(self, L, t, s):
        em, g, dim, bufs = self.em, L.g, self.dim, self.bufs
        q = self.queue_of[s.index] = self.pick_queue(L, t, s)
        mr, init = t.rows, L.bias_c
        if s.first and not init:         # the GEMM overwrites c{tb}: tile t - 2's epilogue read it
            self.wait_epilogue(q, t.index - 2, f"{g.name}: c{t.buf} free")
        a_buf = bufs[f"a{s.buf}"].base
        if self.a_resident(L):
            home = self.a_home(L, t)
            a_buf = bufs[f"a{home}"].base + (s.k0 // dim) * mr
            reads = self.a_reads[home][1]
            reads[q] = max(reads.get(q, -1), s.index)
            self.resident_steps.add(s.index)
        if L.fwd_src is not None:        # A = the previous GEMM's output buffer, once written
            self.wait_epilogue(q, L.fwd_src.index, f"{g.name}: A on chip")
            self.o_readers[L.fwd_src.buf].append(s.index)
            a_buf = bufs[f"o{L.fwd_src.buf}"].base + (s.k0 // dim) * mr
        em.wait(q, EV_LOADED, s.index + 1, f"{g.name}: step {s.index} operands")
        em.add(q, Opcode.GEMM, f"{g.name}: step {s.index}" + (" (A on chip)" if L.fwd_src else ""),
               a_addr=a_buf, b_addr=bufs[f"b{s.buf}"].base, c_addr=bufs[f"c{t.buf}"].base, m=mr,
               k_tiles=ceil_div(s.k1 - s.k0, dim), n_tiles=ceil_div(t.n1 - t.n0, dim),
               a_kt_stride=mr, b_nt_stride=ceil_div(s.k1 - s.k0, dim) * dim, c_nt_stride=mr,
               accumulate=int(init or not s.first))
        em.signal(q, self.computed(s.index), s.index + 1, f"{g.name}: step {s.index} multiplied")

    # ---- the epilogue on the compute queue of the tile's last step (after its SIGNAL, so after
    # its GEMM; the other compute queue's GEMM keeps the PE array busy meanwhile), then the store
    def epilogue(self, L, t):
        em, g, dim, bufs = self.em, L.g, self.dim, self.bufs
        mr, tb = t.rows, t.buf
        q = self.epi_queue[t.index] = self.queue_of[t.steps[-1].index]
        if L.param_late and t.steps[-1].index == L.first_step:   # no later step's load covers them
            em.wait(q, EV_LOADED, L.first_step + 2, f"{g.name}: bias/mult/shift loaded")
        self.o_free(q, t, g.name, [s.index for s in t.steps])
        nt0, ngs = t.n0 // dim, ceil_div(t.n1 - t.n0, dim)
        bias_op = g.bias is not None and not L.bias_c
        # a max-reduce writes one output row per n-tile (its n-tiles 1 row apart)
        orows = 1 if g.maxred else mr
        # C, output and residual n-tiles are contiguous (stride mr): with per-tensor
        # parameters and no bias to add, one command covers all of them (not a max-reduce: it
        # would reduce the n-tiles together)
        one = L.uniform and not bias_op and not g.maxred
        for j0, nj in ([(0, ngs)] if one else [(j, 1) for j in range(ngs)]):
            prow = L.tg.param_base + 3 * (nt0 + j0)
            what = f"n-tiles {nt0}..{nt0 + nj - 1}" if nj > 1 else f"n-tile {nt0 + j0}"
            em.add(q, Opcode.VECTOR, f"{g.name}: epilogue tile {t.index} {what}",
                   src_addr=bufs[f"c{tb}"].base + j0 * mr, dst_addr=bufs[f"o{tb}"].base + j0 * orows,
                   rows=mr * nj, bias_addr=prow, mult_addr=prow + 1, shift_addr=prow + 2,
                   res_addr=bufs[f"r{tb}"].base + j0 * mr if L.r else 0,
                   zero_point=g.zero_point & 0xFF,
                   **{"ops.bias": int(bias_op), "ops.relu": int(g.relu), "ops.add": int(L.r is not None),
                      "ops.maxred": int(g.maxred)})
        em.signal(q, EV_EPILOGUE[self.cqs.index(q)], t.index + 1, f"{g.name}: tile {t.index} epilogue")
        self.store(L, t, orows)

    def o_free(self, q, t, name, steps=()):
        """Queue q waits until o{t.buf} may be written: tile t - 2 stored it, the other queue's
        GEMMs reading it on chip (and ``steps``, writing this tile's C) are done."""
        tb = t.buf
        others = [i for i in list(steps) + self.o_readers[tb] if self.queue_of[i] != q]
        if others:
            self.em.wait(q, self.computed(max(others)), max(others) + 1,
                         f"{name}: step {max(others)} done")
        self.o_readers[tb] = []
        self.em.wait(q, EV_STORED, t.index - 1, f"{name}: o{tb} free")

    # ---- queue 2: store
    def store(self, L, t, orows=None, parts=None):
        """Tile t's output from o{t.buf} (``orows`` rows per n-tile) to the host; ``parts``:
        ``(n0, n1, first o row)`` column ranges stored separately (default the whole tile)."""
        g = L.g
        self.store_parts(L, t, [(t.m0 * g.n + n0, n1 - n0, off)
                                for n0, n1, off in parts or [(t.n0, t.n1, 0)]], g.n, orows)

    def store_parts(self, L, t, parts, row_stride, orows=None):
        """Tile t's output from o{t.buf}: per ``(host offset, columns, first o row)`` part a
        ``rows x columns`` store (n-tiles ``orows`` apart), then the ``stored`` SIGNAL."""
        g, em = L.g, self.em
        orows = t.rows if orows is None else orows
        self.wait_epilogue(STORE_Q, t.index, f"{g.name}: tile {t.index} ready")
        base = self.bufs[f"o{t.buf}"].base
        paged = getattr(g.output, "paged", None)
        for off, cols, local in parts:
            if paged is not None:       # a K/V row goes to its token's slot in the cache
                col = off - t.m0 * row_stride
                rows = [(1, HostAddr(POOL, paged.region + col, slot_param(*divmod(r, paged.tokens))),
                         local + r - t.m0) for r in range(t.m0, t.m1)]
            else:
                rows = [(orows, HostAddr(L.o, off), local)]
            for n, host, first in rows:
                for c in tiled_dma(Opcode.DMA_STORE, host_addr=host, host_row_stride=row_stride,
                                   rows=n, cols=cols, elem_bytes=1, local_addr=base + first,
                                   local_plane_stride=orows, local_row_stride=1, dim=self.dim):
                    em.add(STORE_Q, c, f"{g.name}: store tile {t.index} [{off}+{cols}]")
        em.signal(STORE_Q, EV_STORED, t.index + 1, f"{g.name}: tile {t.index} stored")
