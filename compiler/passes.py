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
  and steps in execution order (global numbering = event timeline values).
* :func:`schedule` (tiled IR -> command IR): loads on queue 0, GEMM + epilogue on queue 1, stores
  on queue 2, ordered only by four program events (loaded / computed / epilogue done / stored,
  as timelines of step and tile numbers); host buffers (inputs, outputs, weights, epilogue
  parameters, intermediates) become Program buffers and every host address a Reloc. Few, big
  descriptors (each costs ~130-260 firmware cycles): one VECTOR per tile for per-tensor
  requantization (the bias preloaded into C), one 3D load for a layer's parameters, a layer's W
  loads not held behind the previous layer's store, and single-tile layers feeding the next
  single-tile layer's A from the output buffer on chip (docs/compiler.md).
"""
import numpy as np

from driver.descriptors import Opcode
from driver.program import BufferSpec, Program, ProgramCommand, Reloc

from . import cost
from .dma import ceil_div, tiled_dma
from .errors import CompileError
from .ir import Buffer, FusedGemm, Step, Tile, TiledGemm, TiledProgram

__all__ = ["fuse", "plan_chip_buffers", "tile", "schedule", "LOAD_Q", "COMPUTE_Q", "STORE_Q",
           "EV_LOADED", "EV_COMPUTED", "EV_EPILOGUE", "EV_STORED"]

LOAD_Q, COMPUTE_Q, STORE_Q = 0, 1, 2
EV_LOADED, EV_COMPUTED, EV_EPILOGUE, EV_STORED = range(4)


# --------------------------------------------------------------------------------- fusion

def _identity(graph_node, x):
    from .graph import Tensor
    n = x.cols
    return Tensor(f"{graph_node.name}.eye", (n, n), "int8", 1.0, 0, None, np.eye(n, dtype=np.int8))


def fuse(graph):
    """Graph -> list of :class:`FusedGemm` in execution order (graph.verify() first)."""
    from .graph import Tensor
    graph.verify()
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
        elif n.op == "add":
            lhs, rhs = n.inputs
            for x, other in ((lhs, rhs), (rhs, lhs)):
                g = absorbable(x)
                if g is not None and g.residual is None and other is not x:
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
        else:
            raise CompileError(n.where, f"unsupported op {n.op!r}")
    for g in gemms:
        if g.bias is not None and not g.bias.any():
            g.bias = None
    return gemms


# --------------------------------------------------------------------------------- buffer planning

#: scratchpad partitions (fractions of 32, in placement order). "banked": with 4 banks
#: a0 = bank 0, a1 = bank 1, b0/o0/r0 = bank 2, b1/o1/r1 = bank 3 (the DMA fills one bank while
#: the PE array reads another). "wide_w": small A buffers and big W buffers, so
#: weight-streaming layers (small M, e.g. an MLP's batch) take fewer, bigger k-steps (each step
#: costs a ~800-cycle SIGNAL -> WAIT -> dispatch gap on the compute queue).
LAYOUTS = {
    "banked": [("a0", 8), ("a1", 8), ("b0", 4), ("o0", 2), ("r0", 2), ("b1", 4), ("o1", 2), ("r1", 2)],
    "wide_w": [("a0", 2), ("a1", 2), ("b0", 10), ("o0", 2), ("r0", 2), ("b1", 10), ("o1", 2), ("r1", 2)],
}


def plan_chip_buffers(caps, param_rows, layout="banked"):
    """Static on-chip buffers: ``{name: Buffer}`` (see the module docstring and LAYOUTS)."""
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
    # load while this one's epilogues run), then the two C buffers, one per bank when possible
    pr = max(param_rows, 1)
    abank = caps.acc_bank_rows
    if caps.acc_banks >= 2:
        crows = abank - 2 * pr
        bases = (2 * pr, abank)
    else:
        crows = (caps.acc_rows - 2 * pr) // 2
        bases = (2 * pr, 2 * pr + crows)
    if crows < 1:
        raise CompileError("buffer planning", f"epilogue parameters need 2 x {param_rows} accumulator "
                                              f"rows, leaving none for the C tiles")
    bufs["p0"] = Buffer("p0", "acc", 0, pr, 0)
    bufs["p1"] = Buffer("p1", "acc", pr, pr, 0)
    for i, base in enumerate(bases):
        bufs[f"c{i}"] = Buffer(f"c{i}", "acc", base, crows, base // abank)
    return bufs


# --------------------------------------------------------------------------------- tiling

def _candidates(n, limit):
    return sorted({ceil_div(n, j) for j in range(1, n + 1)} & set(range(1, limit + 1)), reverse=True)[:48]


def choose_tiling(g, caps, bufs):
    """(tm, kc, ng) for a GEMM: the fitting choice with the lowest predicted cost."""
    dim = caps.dim
    kt, nt = ceil_div(g.k, dim), ceil_div(g.n, dim)
    cap_a, cap_b = bufs["a0"].rows, bufs["b0"].rows
    cap_o = min(bufs["o0"].rows, bufs["r0"].rows, bufs["c0"].rows)
    best = None
    for kc in _candidates(kt, min(0xFFF, cap_b // dim)):
        for ng in _candidates(nt, min(0xFFF, cap_b // (kc * dim))):
            tm = min(g.m, cap_a // kc, cap_o // ng, 0xFFFF)
            if tm < 1:
                continue
            c = cost.tiling_cost(g.m, g.k, g.n, tm, kc, ng, caps)
            if best is None or c < best[0]:
                best = (c, tm, kc, ng)
    if best is None:
        raise CompileError(g.where, f"{g.m}x{g.k}x{g.n} GEMM: no tile fits the buffers "
                                    f"(A {cap_a}, W {cap_b}, C/out {cap_o} rows)")
    return best[1:]


def tile(gemms, caps, layout="banked", first_short=True):
    """Fused graph -> :class:`TiledProgram` (buffers planned, tiles and steps numbered).
    ``first_short``: the program's first step takes a quarter of its k-tiles (when it has 4 or
    more), shortening the pipeline fill (its load overlaps nothing)."""
    dim = caps.dim
    param_rows = max(3 * ceil_div(g.n, dim) for g in gemms)
    bufs = plan_chip_buffers(caps, param_rows, layout)
    out, step, tile_no = [], 0, 0
    for j, g in enumerate(gemms):
        tm, kc, ng = choose_tiling(g, caps, bufs)
        tg = TiledGemm(g, tm, kc, ng, f"p{j % 2}", bufs[f"p{j % 2}"].base)
        for m0 in range(0, g.m, tm):
            for n0 in range(0, g.n, ng * dim):
                t = Tile(tile_no, m0, min(g.m, m0 + tm), n0, min(g.n, n0 + ng * dim))
                tile_no += 1
                # the program's first step is short (a quarter of the k-tiles): its load is the
                # pipeline fill nothing overlaps
                bounds = list(range(0, g.k, kc * dim)) + [g.k]
                if step == 0 and kc >= 4 and first_short:
                    bounds.insert(1, min(g.k, ceil_div(kc, 4) * dim))
                for k0, k1 in zip(bounds, bounds[1:]):
                    t.steps.append(Step(step, k0, k1, k0 == 0, k1 == g.k))
                    step += 1
                tg.tiles.append(t)
        out.append(tg)
    return TiledProgram(caps, bufs, out)


# --------------------------------------------------------------------------------- scheduling

class HostAddr:
    """A relocatable host address (buffer + offset) that DMA helpers can offset."""

    def __init__(self, buffer, offset=0):
        self.buffer, self.offset = buffer, offset

    def __add__(self, k):
        return HostAddr(self.buffer, self.offset + k)


def _program_command(queue, cmd, note, tag):
    fields, relocs = {}, []
    for k, v in cmd.fields.items():
        if isinstance(v, HostAddr):
            relocs.append(Reloc(k, v.buffer, v.offset))
        else:
            fields[k] = v
    return ProgramCommand(queue, cmd.opcode, fields, tuple(relocs), cmd.irq, tag, note)


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

    ``bias_in_c``: for a GEMM with per-tensor requantization (``mult``/``shift`` the same for
    every channel) and a bias, preload the bias into the C tile with one DMA so that one VECTOR
    covers the whole tile — ``True`` always, ``False`` never (one VECTOR per n-tile), ``"auto"``
    when the VECTOR dispatches it saves cost more than the extra DMA.

    ``forward``: when a single-tile GEMM's A is the output of the single-tile GEMM just before
    it, its GEMMs read A straight from that GEMM's output buffer (the int8 n-tiles, ``mr`` rows
    apart, are exactly the k-tile layout A needs) instead of waiting for the store and reloading
    it; the output is still stored. The buffer stays intact until then: the next epilogue into it
    (tile t + 2) comes after a compute-queue SIGNAL, which waits for these GEMMs."""
    dim = tiled.caps.dim
    p = Program(name, events=4)
    outs = {id(t) for t in graph_outputs}
    ins = {id(t) for t in graph_inputs}
    declared = set()
    last_tile = {}                    # id(tensor) -> global index of the last tile storing it

    def host_buffer(t):
        if t.name in declared:
            return t.name
        if t.is_const:
            role, init = "const", np.ascontiguousarray(t.data).tobytes()
        elif id(t) in outs:
            role, init = "output", None
        elif id(t) in ins or getattr(t, "im2col", None) is not None:
            role, init = "input", None
        else:
            role, init = "scratch", None
        p.add_buffer(BufferSpec(t.name, t.nbytes, 64, role, init))
        declared.add(t.name)
        return t.name

    em = _Emitter(p)
    bufs = tiled.buffers
    first_step = {t.index: t.steps[0].index for tg in tiled.gemms for t in tg.tiles}

    def epilogue_wait(t, s, what):
        """Before a load into a buffer tile t - 2's epilogue reads (its C, residual): wait for that
        epilogue — unless the step's buffer wait (computed >= s - 1) already implies it: the
        SIGNAL after step s - 2's GEMM waits for every earlier compute-queue command, which
        includes tile t - 2's epilogue when step s - 2 belongs to tile t - 1 or later."""
        if t.index >= 2 and s.index - 2 >= first_step[t.index - 1]:
            return
        em.wait(LOAD_Q, EV_EPILOGUE, t.index - 1, f"{g.name}: {what}{t.buf} free")
    for j, tg in enumerate(tiled.gemms):
        g = tg.gemm
        a_name, w_name = host_buffer(g.a), host_buffer(g.w)
        r_name = host_buffer(g.residual) if g.residual is not None else None
        o_name = host_buffer(g.output)
        # RAW through host memory: wait until every producer of an operand has stored it. Only a
        # computed W must be waited for before the layer's first load; the activation (A and
        # residual) wait goes right before the first A load, so this layer's parameters and first
        # W chunk load while the previous layer finishes its epilogue and store.
        prev = tiled.gemms[j - 1] if j else None
        fwd = (forward and prev is not None and len(prev.tiles) == 1 and len(tg.tiles) == 1
               and g.a is prev.gemm.output and g.w is not g.a)
        if fwd:
            src_tile = prev.tiles[0]
            a_fwd = bufs[f"o{src_tile.buf}"].base
        w_deps = [last_tile[id(g.w)]] if id(g.w) in last_tile else []
        a_deps = [last_tile[id(t)] for t in (g.a, g.residual)
                  if t is not None and id(t) in last_tile and not (fwd and t is g.a and t is not g.residual)]
        if w_deps:
            em.wait(LOAD_Q, EV_STORED, max(w_deps) + 1, f"{g.name}: W stored")
        a_wait = max(a_deps) + 1 if a_deps else 0
        # one VECTOR per tile when the requantization is per-tensor (mult/shift the same for every
        # channel): the per-channel bias is then preloaded into the C tile by a DMA and the GEMM
        # accumulates onto it, so the epilogue needs no per-n-tile parameter rows
        uniform = bool((g.mult == g.mult[0]).all() and (g.shift == g.shift[0]).all())
        use_bias_c = uniform and g.bias is not None and bias_in_c is not False
        if use_bias_c and bias_in_c == "auto":
            ng = ceil_div(min(g.n, tg.ng * dim), dim)
            dma = cost.dma_cycles(min(g.m, tg.tm), ng, 4 * dim, tiled.caps) + cost.DISPATCH
            use_bias_c = (ng - 1) * cost.DISPATCH > dma
        # without the bias in C a per-tensor epilogue still fuses when there is no bias
        uniform = uniform and (g.bias is None or use_bias_c)
        # epilogue parameters ([bias; mult; shift] int32 rows, one const buffer per GEMM) into the
        # parameter buffer the GEMM two layers back used, once its epilogues are done
        if j >= 2:
            em.wait(LOAD_Q, EV_EPILOGUE, tiled.gemms[j - 2].tiles[-1].index + 1,
                    f"{g.name}: {tg.param_buf} free")
        n = g.n
        params = np.stack([g.bias if g.bias is not None else np.zeros(n, np.int32), g.mult, g.shift])
        pname = f"{g.name}.params"
        p.add_buffer(BufferSpec(pname, params.nbytes, 64, "const", params.astype(np.int32).tobytes()))
        # one 3D load: plane = n-tile, its 3 rows = (bias, mult, shift)
        for c in tiled_dma(Opcode.DMA_LOAD, host_addr=HostAddr(pname, 0), host_row_stride=4 * n,
                           rows=3, cols=n, elem_bytes=4, local_addr=tg.param_base,
                           local_plane_stride=3, local_row_stride=1, dim=dim, acc=1):
            em.add(LOAD_Q, c, f"{g.name}: load bias/mult/shift")
        for t in tg.tiles:
            mr, tb = t.rows, t.buf
            for s in t.steps:
                sb, kcs = s.buf, ceil_div(s.k1 - s.k0, dim)
                ngs = ceil_div(t.n1 - t.n0, dim)
                a_buf, b_buf = bufs[f"a{sb}"].base, bufs[f"b{sb}"].base
                # ---- queue 0: load the step's operands into the free half of the double buffer
                em.wait(LOAD_Q, EV_COMPUTED, s.index - 1, f"{g.name}: a{sb}/b{sb} free")
                if s.first and use_bias_c:
                    # the bias rows initialise C (c{tb} is free once tile t - 2's epilogue is done)
                    epilogue_wait(t, s, "c")
                    for c in tiled_dma(Opcode.DMA_LOAD, host_addr=HostAddr(pname, 4 * t.n0),
                                       host_row_stride=0, rows=mr, cols=t.n1 - t.n0, elem_bytes=4,
                                       local_addr=bufs[f"c{tb}"].base, local_plane_stride=mr,
                                       local_row_stride=1, dim=dim, acc=1):
                        em.add(LOAD_Q, c, f"{g.name}: bias into C tile {t.index}")
                for c in tiled_dma(Opcode.DMA_LOAD, host_addr=HostAddr(w_name, s.k0 * g.n + t.n0),
                                   host_row_stride=g.n, rows=s.k1 - s.k0, cols=t.n1 - t.n0,
                                   elem_bytes=1, local_addr=b_buf, local_plane_stride=kcs * dim,
                                   local_row_stride=1, dim=dim):
                    em.add(LOAD_Q, c, f"{g.name}: load W[{s.k0}:{s.k1}, {t.n0}:{t.n1}]")
                if a_wait:
                    em.wait(LOAD_Q, EV_STORED, a_wait, f"{g.name}: operands stored")
                    a_wait = 0
                if fwd:                               # A = the previous GEMM's output buffer
                    a_buf = a_fwd + (s.k0 // dim) * mr
                else:
                    for c in tiled_dma(Opcode.DMA_LOAD, host_addr=HostAddr(a_name, t.m0 * g.k + s.k0),
                                       host_row_stride=g.k, rows=mr, cols=s.k1 - s.k0, elem_bytes=1,
                                       local_addr=a_buf, local_plane_stride=mr, local_row_stride=1,
                                       dim=dim):
                        em.add(LOAD_Q, c, f"{g.name}: load A[{t.m0}:{t.m1}, {s.k0}:{s.k1}]")
                if kcs * dim > s.k1 - s.k0:          # W's K edge: zero rows
                    em.add(LOAD_Q, Opcode.DMA_LOAD, f"{g.name}: zero W K-edge", host_addr=0,
                           host_row_stride=0, host_plane_stride=0, row_bytes=0,
                           rows=kcs * dim - (s.k1 - s.k0), planes=ngs,
                           local_addr=b_buf + (s.k1 - s.k0), local_row_stride=1,
                           local_plane_stride=kcs * dim)
                if s.last and r_name is not None:
                    epilogue_wait(t, s, "r")
                    for c in tiled_dma(Opcode.DMA_LOAD, host_addr=HostAddr(r_name, t.m0 * g.n + t.n0),
                                       host_row_stride=g.n, rows=mr, cols=t.n1 - t.n0, elem_bytes=1,
                                       local_addr=bufs[f"r{tb}"].base, local_plane_stride=mr,
                                       local_row_stride=1, dim=dim):
                        em.add(LOAD_Q, c, f"{g.name}: load residual [{t.m0}:{t.m1}, {t.n0}:{t.n1}]")
                em.signal(LOAD_Q, EV_LOADED, s.index + 1, f"{g.name}: step {s.index} loaded")
                # ---- queue 1: multiply
                em.wait(COMPUTE_Q, EV_LOADED, s.index + 1, f"{g.name}: step {s.index} operands")
                em.add(COMPUTE_Q, Opcode.GEMM, f"{g.name}: step {s.index}" + (" (A on chip)" if fwd else ""),
                       a_addr=a_buf, b_addr=b_buf,
                       c_addr=bufs[f"c{tb}"].base, m=mr, k_tiles=kcs, n_tiles=ngs, a_kt_stride=mr,
                       b_nt_stride=kcs * dim, c_nt_stride=mr, accumulate=int(use_bias_c or not s.first))
                em.signal(COMPUTE_Q, EV_COMPUTED, s.index + 1, f"{g.name}: step {s.index} multiplied")
            # ---- queue 1: epilogue of the tile into the free output buffer
            em.wait(COMPUTE_Q, EV_STORED, t.index - 1, f"{g.name}: o{tb} free")
            nt0, ngs = t.n0 // dim, ceil_div(t.n1 - t.n0, dim)
            # C, output and residual n-tiles are contiguous (stride mr): with per-tensor
            # parameters one command covers all of them
            for j0, nj in ([(0, ngs)] if uniform else [(j, 1) for j in range(ngs)]):
                prow = tg.param_base + 3 * (nt0 + j0)
                what = f"n-tiles {nt0}..{nt0 + nj - 1}" if nj > 1 else f"n-tile {nt0 + j0}"
                em.add(COMPUTE_Q, Opcode.VECTOR, f"{g.name}: epilogue tile {t.index} {what}",
                       src_addr=bufs[f"c{tb}"].base + j0 * mr, dst_addr=bufs[f"o{tb}"].base + j0 * mr,
                       rows=mr * nj, bias_addr=prow, mult_addr=prow + 1, shift_addr=prow + 2,
                       res_addr=bufs[f"r{tb}"].base + j0 * mr if r_name else 0,
                       zero_point=g.zero_point & 0xFF,
                       **{"ops.bias": int(g.bias is not None and not use_bias_c),
                          "ops.relu": int(g.relu), "ops.add": int(r_name is not None)})
            em.signal(COMPUTE_Q, EV_EPILOGUE, t.index + 1, f"{g.name}: tile {t.index} epilogue")
            # ---- queue 2: store
            em.wait(STORE_Q, EV_EPILOGUE, t.index + 1, f"{g.name}: tile {t.index} ready")
            for c in tiled_dma(Opcode.DMA_STORE, host_addr=HostAddr(o_name, t.m0 * g.n + t.n0),
                               host_row_stride=g.n, rows=mr, cols=t.n1 - t.n0, elem_bytes=1,
                               local_addr=bufs[f"o{tb}"].base, local_plane_stride=mr,
                               local_row_stride=1, dim=dim):
                em.add(STORE_Q, c, f"{g.name}: store [{t.m0}:{t.m1}, {t.n0}:{t.n1}]")
            em.signal(STORE_Q, EV_STORED, t.index + 1, f"{g.name}: tile {t.index} stored")
            last_tile[id(g.output)] = t.index
    # the last command of each queue raises the completion interrupt
    last = {}
    for i, c in enumerate(p.commands):
        last[c.queue] = i
    for i in last.values():
        c = p.commands[i]
        p.commands[i] = ProgramCommand(c.queue, c.opcode, c.fields, c.relocs, True, c.tag, c.note)
    return p
