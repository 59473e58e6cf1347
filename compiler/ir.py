"""The compiler's lower IR levels, each with a verifier (raising CompileError naming the node and
the reason) and an MLIR-generic dump.

* **fused graph** (a list of layers): the graph after fusion; every layer is one GEMM with its
  epilogue (bias, requantize, ReLU, residual add) (:class:`FusedGemm`), one special-function op
  over rows (:class:`FusedSpecial`) or one multi-head attention (:class:`FusedAttention`).
* **tiled IR** (:class:`TiledProgram`): on-chip buffers (scratchpad / accumulator regions, with
  their bank) and, per fused GEMM, its tiles (M rows × a group of N tiles) and their k-chunks
  (steps), each step naming the double buffer it uses.
* **command IR** (:class:`CommandIR`): ``driver.program.ProgramCommand`` per queue, host addresses
  as relocations, program-relative events.
"""
from dataclasses import dataclass, field

import numpy as np

from spec.descriptors import Opcode
from driver.program import ProgramError

from . import mlir
from .dma import ceil_div
from .errors import CompileError

__all__ = ["FusedGemm", "FusedSpecial", "FusedAttention", "verify_fused", "dump_fused", "Buffer", "Step", "Tile", "TiledGemm",
           "TiledProgram", "CommandIR"]

GEMM_LIMITS = {"m": 0xFFFF, "k_tiles": 0xFFF, "n_tiles": 0xFFF}


# --------------------------------------------------------------------------------- fused graph

@dataclass(eq=False)
class FusedGemm:
    """``output = [add residual] [relu] requant(a @ w (+ bias))`` on 2-D views of the tensors."""
    name: str
    nodes: list                  #: graph nodes folded into this one (the first is the root)
    a: object                    #: int8 Tensor [M, K] (for a conv: the im2col input tensor)
    w: object                    #: int8 Tensor [K, N] (constant or a graph value)
    bias: np.ndarray             #: int32 [N] or None
    mult: np.ndarray
    shift: np.ndarray
    zero_point: int
    output: object
    relu: bool = False
    residual: object = None
    maxred: bool = False         #: the epilogue reduces all M rows to one (output [1, N])

    @property
    def m(self):
        return self.a.rows

    @property
    def k(self):
        return self.a.cols

    @property
    def n(self):
        return self.w.cols

    @property
    def where(self):
        return self.nodes[0].where

    kind = "gemm"

    def operands(self):
        return [self.a, self.w] + ([self.residual] if self.residual is not None else [])


class _RowLayer:
    """What the GEMM passes ask of every fused layer that is not a GEMM: no epilogue extras, and
    its first graph node for error messages."""
    relu = False
    residual = None
    maxred = False

    @property
    def where(self):
        return self.nodes[0].where


@dataclass(eq=False)
class FusedSpecial(_RowLayer):
    """``output = op(a [, b])`` row by row on the special-function unit: ``op`` is a graph op of
    ``compiler.graph.SPECIAL_OPS`` with its node's integer attributes; every row of ``a``
    (``m`` rows of ``k`` channels) is one logical SFU row."""
    name: str
    nodes: list
    op: str
    a: object                    #: int8 Tensor
    b: object                    #: the second operand of ``mul``, else None
    output: object
    attrs: dict
    kind = "sfu"

    @property
    def m(self):
        return self.a.rows

    @property
    def k(self):
        return self.a.cols

    @property
    def n(self):
        return self.a.cols

    def operands(self):
        return [self.a] + ([self.b] if self.b is not None else [])


@dataclass(eq=False)
class FusedAttention(_RowLayer):
    """A graph ``attention`` node: per tile (query rows of one batch item, or several whole
    items) and group of heads, the Q·Kᵀ GEMM batched over the (item, head) pairs (K read
    transposed as stored), the scores' VECTOR requantization, one SOFTMAX per pair and the
    batched P·V GEMM with its VECTOR requantization (docs/compiler.md)."""
    name: str
    nodes: list
    q: object                    #: int8 [..., Sq, D]
    k: object                    #: int8 [..., Sk, D]
    v: object
    output: object
    attrs: dict                  #: the graph node's attributes (heads, causal, multipliers)
    kind = "attention"

    @property
    def batches(self):
        return self.q.rows // self.sq

    @property
    def sq(self):
        return self.q.shape[-2]

    @property
    def sk(self):
        paged = getattr(self.k, "paged", None)     # the keys of the KV cache's pages
        return self.k.shape[-2] if paged is None else paged.keys

    @property
    def heads(self):
        return self.attrs["heads"]

    @property
    def dh(self):
        return self.q.cols // self.heads

    @property
    def m(self):
        return self.q.rows

    @property
    def n(self):
        return self.q.cols

    def operands(self):
        return [self.q, self.k, self.v]


@dataclass(eq=False)
class AttentionPart(FusedAttention):
    """A part of an attention too long for the on-chip buffers (keys tiled): ``part`` "scores"
    (``output`` = the int8 scores ``[B, heads, Sq, Sk]`` of ``q``, ``k``) or "pv" (``probs`` =
    the softmax of the scores, times ``v``, requantized into ``output``); the softmax between them
    is a special-function layer."""
    part: str = "scores"
    probs: object = None

    @property
    def kind(self):
        return f"attention_{self.part}"

    def operands(self):
        return [self.q, self.k] if self.part == "scores" else [self.probs, self.v]


def verify_fused(gemms, graph_inputs, consts=()):
    avail = {id(t) for t in graph_inputs} | {id(t) for t in consts}
    for g in gemms:
        if g.kind != "gemm":
            _verify_layer(g, avail)
            continue
        for t in g.operands():
            host_input = getattr(t, "im2col", None) is not None
            if id(t) not in avail and not t.is_const and not host_input:
                raise CompileError(g.where, f"operand {t.name!r} is not available before this node")
            if t.dtype != "int8":
                raise CompileError(g.where, f"operand {t.name!r} has unsupported dtype {t.dtype}")
        if g.k != g.w.rows:
            raise CompileError(g.where, f"A has K={g.k} columns, W has {g.w.rows} rows")
        n = g.n
        for name, arr in (("mult", g.mult), ("shift", g.shift)) + ((("bias", g.bias),) if g.bias is not None else ()):
            if arr is None or arr.shape != (n,) or arr.dtype != np.int32:
                raise CompileError(g.where, f"{name} must be int32 [{n}]")
        if g.shift.min() < 0 or g.shift.max() > 63:
            raise CompileError(g.where, f"shift outside 0..63 ({g.shift.min()}..{g.shift.max()})")
        if not -128 <= g.zero_point <= 127:
            raise CompileError(g.where, f"zero point {g.zero_point} outside -128..127")
        if g.residual is not None and (g.residual.rows, g.residual.cols) != (g.m, n):
            raise CompileError(g.where, f"residual {g.residual.name!r} is {g.residual.shape}, "
                                        f"not {g.m}x{n}")
        out_rows = 1 if g.maxred else g.m
        if g.maxred and g.residual is not None:
            raise CompileError(g.where, "a max-reduce epilogue cannot add a residual")
        if (g.output.rows, g.output.cols) != (out_rows, n) or g.output.dtype != "int8":
            raise CompileError(g.where, f"output {g.output.name!r} is not int8 {out_rows}x{n}")
        avail.add(id(g.output))


def _verify_layer(g, avail):
    """verify_fused for a special-function or attention layer."""
    for t in g.operands():
        if id(t) not in avail and not t.is_const:
            raise CompileError(g.where, f"operand {t.name!r} is not available before this node")
        if t.dtype != "int8":
            raise CompileError(g.where, f"operand {t.name!r} has unsupported dtype {t.dtype}")
    shape = g.operands()[0].shape
    if any(t.shape != g.operands()[0].shape for t in g.operands()[1:]) and g.kind == "sfu":
        raise CompileError(g.where, f"operand shapes differ: {[t.shape for t in g.operands()]}")
    if g.kind in ("sfu", "attention") and g.output.shape != shape or g.output.dtype != "int8":
        raise CompileError(g.where, f"output {g.output.name!r} is not int8 {shape}")
    avail.add(id(g.output))


def _layer_attrs(g):
    if g.kind == "sfu":
        return dict({k: v for k, v in g.attrs.items() if k != "table"}, op=g.op,
                    fused=",".join(n.name for n in g.nodes))
    return dict(g.attrs, fused=",".join(n.name for n in g.nodes))


def dump_fused(name, gemms, outputs):
    lines, defined = [], {id(g.output) for g in gemms}
    for g in gemms:
        for t in g.operands():
            if id(t) in defined:
                continue
            defined.add(id(t))
            spec = getattr(t, "im2col", None)
            if spec is not None:
                src = spec["source"]
                if id(src) not in defined:
                    defined.add(id(src))
                    lines.append(mlir.op_line("kaki.input", [src.name], [], dict(name=src.name), [],
                                              [src.mlir_type()]))
                lines.append(mlir.op_line("kaki.im2col", [t.name], [src.name], dict(
                    kernel=spec["kernel"], stride=spec["stride"], padding=spec["padding"],
                    pad_value=src.zero_point, host=True), [src.mlir_type()],
                    [mlir.tensor_type((t.rows, t.cols), t.dtype)]))
            else:
                lines.append(mlir.op_line("kaki.const" if t.is_const else "kaki.input", [t.name], [],
                                          dict(name=t.name), [],
                                          [mlir.tensor_type((t.rows, t.cols), t.dtype)]))
    for g in gemms:
        if g.kind != "gemm":
            ins = g.operands()
            lines.append(mlir.op_line(f"kaki.fused_{g.kind}", [g.output.name], [t.name for t in ins],
                                      _layer_attrs(g), [t.mlir_type() for t in ins],
                                      [g.output.mlir_type()]))
            continue
        attrs = dict(fused=",".join(n.name for n in g.nodes), zero_point=g.zero_point,
                     relu=g.relu, bias=g.bias is not None, add=g.residual is not None,
                     mult=g.mult, shift=g.shift)
        if g.maxred:
            attrs["maxred"] = True
        ins = g.operands()
        lines.append(mlir.op_line("kaki.fused_gemm", [g.output.name], [t.name for t in ins], attrs,
                                  [mlir.tensor_type((t.rows, t.cols), t.dtype) for t in ins],
                                  [mlir.tensor_type((g.m, g.n), "int8")]))
    lines.append(mlir.op_line("kaki.return", [], [t.name for t in outputs], {},
                              [mlir.tensor_type((t.rows, t.cols), t.dtype) for t in outputs], []))
    return mlir.module(name, lines)


# --------------------------------------------------------------------------------- tiled IR

@dataclass(frozen=True)
class Buffer:
    name: str
    mem: str                     #: "spad" or "acc"
    base: int                    #: first row
    rows: int
    bank: int


@dataclass
class Step:
    """One k-chunk of a tile: loads A[m0:m1, k0:k1] and W[k0:k1, n0:n1], one GEMM command."""
    index: int                   #: global step number (the timeline value of the load events)
    k0: int
    k1: int
    first: bool
    last: bool

    @property
    def buf(self):
        return self.index % 2


@dataclass
class Tile:
    """An output tile ``[m0:m1, n0:n1]``: its steps, then the epilogue and the store."""
    index: int                   #: global tile number (timeline value of the epilogue/store events)
    m0: int
    m1: int
    n0: int
    n1: int
    steps: list = field(default_factory=list)
    #: the heads ``[h0, h1)`` of an attention-scores tile (its n range is keys)
    h0: int = 0
    h1: int = 0

    @property
    def buf(self):
        return self.index % 2

    @property
    def rows(self):
        return self.m1 - self.m0


@dataclass
class TiledGemm:
    gemm: FusedGemm
    tm: int                      #: rows per tile
    kc: int                      #: k-tiles per step
    ng: int                      #: n-tiles per tile
    param_buf: str               #: the accumulator buffer holding its (bias, mult, shift) rows
    param_base: int              #: first accumulator row of the (bias, mult, shift) triples
    tiles: list = field(default_factory=list)
    #: an M tile's whole A (tm rows x every k-tile) fits one A buffer: it is loaded once, by the
    #: first tile of that M range, into a{M tile % 2}, and the tiles of its other N groups read it
    a_resident: bool = False


@dataclass
class TiledProgram:
    caps: object
    buffers: dict                #: name -> Buffer ("a0", "a1", "b0", "b1", "o0", "o1", "r0", "r1", "c0", "c1", "p0", "p1")
    gemms: list                  #: TiledGemm in execution order
    compute_queues: int = 1      #: GEMM queues the steps alternate between

    def buffer(self, kind, parity):
        return self.buffers[f"{kind}{parity}"]

    def shape(self):
        """Everything the schedule depends on besides the buffers: equal shapes over equal
        buffers schedule to the same program."""
        return (self.compute_queues, tuple(
            (tg.tm, tg.kc, tg.ng, tg.a_resident, tuple((t.m0, t.m1, t.n0, t.n1,
                                         tuple((s.k0, s.k1) for s in t.steps)) for t in tg.tiles))
            for tg in self.gemms))

    def verify(self):
        caps, dim = self.caps, self.caps.dim
        limits = {"spad": caps.spad_rows, "acc": caps.acc_rows}
        bufs = sorted(self.buffers.values(), key=lambda b: (b.mem, b.base))
        for b in bufs:
            if b.rows <= 0 or b.base < 0 or b.base + b.rows > limits[b.mem]:
                raise CompileError(f"buffer {b.name!r}", f"rows {b.base}..{b.base + b.rows} outside "
                                                         f"the {limits[b.mem]}-row {b.mem}")
        for x, y in zip(bufs, bufs[1:]):
            if x.mem == y.mem and x.base + x.rows > y.base:
                raise CompileError(f"buffer {y.name!r}", f"overlaps buffer {x.name!r}")
        step_no = tile_no = 0
        for tg in self.gemms:
            if tg.gemm.kind != "gemm":
                from .special_layers import verify_layer
                tile_no, step_no = verify_layer(tg, self.buffers, dim, tile_no, step_no)
                continue
            g, where = tg.gemm, tg.gemm.where
            nt = ceil_div(g.n, dim)
            if tg.kc < 1 or tg.ng < 1 or tg.tm < 1:
                raise CompileError(where, f"empty tiling tm={tg.tm} kc={tg.kc} ng={tg.ng}")
            for lim, v in (("k_tiles", tg.kc), ("n_tiles", tg.ng), ("m", tg.tm)):
                if v > GEMM_LIMITS[lim]:
                    raise CompileError(where, f"tile {lim}={v} exceeds the GEMM field ({GEMM_LIMITS[lim]})")
            need = {"a": tg.tm * (ceil_div(g.k, dim) if tg.a_resident else tg.kc),
                    "b": tg.ng * tg.kc * dim, "o": tg.tm * tg.ng,
                    "r": tg.tm * tg.ng, "c": tg.tm * tg.ng}
            for kind, rows in need.items():
                if rows > self.buffers[f"{kind}0"].rows:
                    raise CompileError(where, f"tile needs {rows} rows of buffer {kind}, it has "
                                              f"{self.buffers[kind + '0'].rows}")
            pb = self.buffers[tg.param_buf]
            if not pb.base <= tg.param_base <= tg.param_base + 3 * nt <= pb.base + pb.rows:
                raise CompileError(where, f"epilogue parameters outside buffer {tg.param_buf!r}")
            cover = np.zeros((g.m, nt), np.int32)
            for t in tg.tiles:
                if t.index != tile_no:
                    raise CompileError(where, f"tile {t.index} out of order (expected {tile_no})")
                tile_no += 1
                if t.n0 % dim or not (0 <= t.m0 < t.m1 <= g.m and 0 <= t.n0 < t.n1 <= g.n):
                    raise CompileError(where, f"tile [{t.m0}:{t.m1}, {t.n0}:{t.n1}] is malformed")
                if t.rows > tg.tm or ceil_div(t.n1 - t.n0, dim) > tg.ng:
                    raise CompileError(where, f"tile {t.index} is larger than the tiling")
                cover[t.m0:t.m1, t.n0 // dim:ceil_div(t.n1, dim)] += 1
                k = 0
                for s in t.steps:
                    if s.index != step_no:
                        raise CompileError(where, f"step {s.index} out of order (expected {step_no})")
                    step_no += 1
                    if s.k0 != k or s.k1 <= s.k0 or s.k0 % dim or ceil_div(s.k1 - s.k0, dim) > tg.kc:
                        raise CompileError(where, f"step {s.index} k-range [{s.k0}:{s.k1}] is malformed")
                    if s.first != (s.k0 == 0) or s.last != (s.k1 == g.k):
                        raise CompileError(where, f"step {s.index} first/last flags are wrong")
                    k = s.k1
                if k != g.k:
                    raise CompileError(where, f"tile {t.index} covers K up to {k}, not {g.k}")
            if cover.min() != 1 or cover.max() != 1:
                raise CompileError(where, "tiles do not cover the output exactly once")
        return self

    def dump(self, name):
        """Buffers as ``kaki.alloc`` ops, then per GEMM its tiling and the unrolled tile loop:
        ``tile.load`` / ``tile.gemm`` per step, ``tile.epilogue`` / ``tile.store`` per tile."""
        ty = {b.name: f"!kaki.buf<{b.mem}, {b.rows}>" for b in self.buffers.values()}

        def op(opname, operands, attrs, results=()):
            return mlir.op_line(opname, list(results), operands, attrs, [ty[o] for o in operands],
                                [ty[r] for r in results] if results else ["()"])

        lines = [op("kaki.alloc", [], dict(mem=b.mem, base=b.base, rows=b.rows, bank=b.bank), [b.name])
                 for b in self.buffers.values()]
        for tg in self.gemms:
            g = tg.gemm
            if g.kind != "gemm":
                lines += self._dump_layer(tg, op)
                continue
            lines.append(op("kaki.tiling", [], dict(gemm=g.name, m=g.m, k=g.k, n=g.n, tm=tg.tm, kc=tg.kc,
                                                    ng=tg.ng, params=tg.param_buf)))
            for t in tg.tiles:
                for s in t.steps:
                    a, b = f"a{s.buf}", f"b{s.buf}"
                    lines.append(op("kaki.tile.load", [a, b], dict(
                        gemm=g.name, step=s.index, m=[t.m0, t.m1], k=[s.k0, s.k1], n=[t.n0, t.n1])))
                    lines.append(op("kaki.tile.gemm", [a, b, f"c{t.buf}"], dict(
                        gemm=g.name, step=s.index, tile=t.index, accumulate=not s.first)))
                ins = [f"c{t.buf}", tg.param_buf] + ([f"r{t.buf}"] if g.residual is not None else [])
                lines.append(op("kaki.tile.epilogue", ins + [f"o{t.buf}"], dict(
                    gemm=g.name, tile=t.index, relu=g.relu, add=g.residual is not None,
                    zero_point=g.zero_point)))
                lines.append(op("kaki.tile.store", [f"o{t.buf}"], dict(
                    gemm=g.name, tile=t.index, m=[t.m0, t.m1], n=[t.n0, t.n1], to=g.output.name)))
        return mlir.module(name, lines)

    @staticmethod
    def _dump_layer(tg, op):
        g = tg.gemm
        what = g.op if g.kind == "sfu" else g.kind
        attrs = dict(layer=g.name, kind=g.kind, op=what, m=g.m, n=g.n, tm=tg.tm,
                     params=tg.param_buf)
        if g.kind == "attention":       # heads per group, whole batch items per tile (0: rows of one)
            attrs.update(heads=tg.kc, items=tg.tm // g.sq if tg.tm >= g.sq else 0)
        lines = [op("kaki.tiling", [], attrs)]
        for t in tg.tiles:
            s = t.steps[0]
            lines.append(op("kaki.tile.load", [f"a{s.buf}", f"b{s.buf}"], dict(
                layer=g.name, step=s.index, m=[t.m0, t.m1], n=[t.n0, t.n1])))
            bufs = [f"a{s.buf}", f"b{s.buf}"] + ([f"c{t.buf}"] if g.kind != "sfu" else [])
            lines.append(op(f"kaki.tile.{what}", bufs + [tg.param_buf, f"o{t.buf}"], dict(
                layer=g.name, step=s.index, tile=t.index)))
            lines.append(op("kaki.tile.store", [f"o{t.buf}"], dict(
                layer=g.name, tile=t.index, m=[t.m0, t.m1], n=[t.n0, t.n1], to=g.output.name)))
        return lines


# --------------------------------------------------------------------------------- command IR

#: MLIR op name (``kaki.<name>``) of every opcode: its lower-case name, events shortened
OPNAMES = {op: {Opcode.SIGNAL_EVENT: "signal", Opcode.WAIT_EVENT: "wait"}.get(op, op.name.lower())
           for op in Opcode}


@dataclass
class CommandIR:
    """``ProgramCommand``s in submission order (their ``queue`` says where they go), the program
    buffers and the number of program events."""
    caps: object
    program: object              #: driver.program.Program under construction
    queues: int = 4

    @property
    def commands(self):
        return self.program.commands

    def verify(self):
        from .refexec import accesses, check_schedulable
        p = self.program
        try:
            p.validate()
        except ProgramError as e:
            raise CompileError(f"program {p.name!r}", str(e)) from None
        dummy = {}
        addr = 0x1000
        for name, spec in p.buffers.items():
            dummy[name] = addr
            addr += -(-spec.nbytes // 64) * 64 + 64
        signals = {}
        for i, c in enumerate(p.commands):
            where = f"command {i} ({c.note or Opcode(c.opcode).name})"
            if not 0 <= c.queue < self.queues:
                raise CompileError(where, f"queue {c.queue} outside 0..{self.queues - 1}")
            fields = dict(c.fields)
            for r in c.relocs:
                fields[r.field] = dummy[r.buffer] + r.offset
            if c.opcode in (Opcode.SIGNAL_EVENT, Opcode.WAIT_EVENT):
                fields["value"] = fields.get("value", 0) & 0xFFFF_FFFF
            from spec.commands import encode, decode
            try:
                words = encode(c.opcode, **fields)
            except ValueError as e:
                raise CompileError(where, str(e)) from None
            if c.opcode == Opcode.SIGNAL_EVENT:
                signals.setdefault(c.fields["event"], []).append((c.queue, c.fields.get("value", 0)))
            try:
                accesses(decode(words), self.caps)
            except ValueError as e:
                raise CompileError(where, str(e)) from None
        for i, c in enumerate(p.commands):
            if c.opcode == Opcode.WAIT_EVENT:
                ev, v = c.fields["event"], c.fields.get("value", 0)
                if not any(q != c.queue and sv >= v for q, sv in signals.get(ev, [])):
                    raise CompileError(f"command {i} ({c.note or 'wait'})",
                                       f"waits for event {ev} >= {v}, which no other queue signals")
        try:
            check_schedulable(p)
        except RuntimeError as e:
            raise CompileError(f"program {p.name!r}", str(e)) from None
        return self

    def dump(self):
        lines = []
        for i, c in enumerate(self.program.commands):
            attrs = {"queue": c.queue, "tag": c.tag}
            attrs.update({k: v for k, v in sorted(c.fields.items())})
            for r in c.relocs:
                attrs[r.field] = f"@{r.buffer}+{r.offset}"
            if c.irq:
                attrs["irq"] = True
            if c.note:
                attrs["note"] = c.note
            lines.append(mlir.op_line(f"kaki.{OPNAMES[Opcode(c.opcode)]}", [], [], attrs, [], ["()"]))
        return mlir.module(self.program.name, lines)
