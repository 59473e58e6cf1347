"""Tiling and scheduling of the layers that are not one GEMM: special-function layers
(:class:`~compiler.ir.FusedSpecial`: softmax, LayerNorm, RMSNorm, lookup tables, elementwise
multiply on the SFU) and multi-head attention (:class:`~compiler.ir.FusedAttention`).

Both use the GEMM layers' pipeline (``compiler.passes``): a tile has one step, the step's loads go
into the free half of the double buffers ``a``/``b`` on the load queue, its commands run on a
compute queue and end with the step's ``computed`` and the tile's ``epilogue`` SIGNALs, its result
is in ``o`` and the store queue writes it back. So every event rule of the GEMM layers holds
across layers of any kind.

* **special-function tile**: ``tm`` whole rows (a row is ``ceil(C / dim)`` segments in the A
  layout, ``tm`` scratchpad rows apart) in ``a``; ``mul``'s second operand or the 256-entry table
  of a ``lut`` in ``b``; LayerNorm/RMSNorm's gamma (and beta) rows in the layer's parameter
  buffer; the SFU writes ``o``. A causal softmax's rows are split at the ``[Sq, Sk]`` blocks so
  each command's mask offset is the block position of its first row.
* **attention tile**: a group of ``hg`` heads (output columns ``h0*dh .. (h0+hg)*dh``) x ``tm``
  query rows of one batch item, or ``ni`` whole items (``tm = ni * Sq``). ``a`` holds Q (A
  layout) and V (B layout), ``b`` holds K in the A layout, read transposed, one slot per (item,
  head) pair. On the compute queue: the Q·Kᵀ GEMM batched over the pairs into ``c``, a
  BARRIER, one VECTOR requantizing all the pairs' scores into ``o`` (int8), a BARRIER, one
  SOFTMAX per pair in place (its item's mask offset), a BARRIER, the batched P·V GEMM into
  ``c`` (heads merge into the output's column layout), then the epilogue VECTOR into ``o``; per
  item its Q, K, V loads and its store. K and V rows past ``Sk`` are
  zeroed (the SOFTMAX writes the probabilities there as 0); with a causal mask a tile takes only
  the keys up to its last query's diagonal. A head starts on a k-tile: when
  ``dh`` is not a multiple of ``dim``, Q, K, V are loaded and the output stored head by head,
  the lanes past ``dh`` zero.
"""
import numpy as np

from spec import chip
from spec.descriptors import Opcode

from . import attention_parts
from .dma import ceil_div, tiled_dma
from .errors import CompileError
from .ir import Step, Tile, TiledGemm
from .kv_cache import PAGE_TOKENS, page_param, pos_param

__all__ = ["param_rows", "needs", "tile_special", "tile_attention", "fits_on_chip", "params_data",
           "verify_layer", "SpecialScheduling"]

SFU_OPCODE = {"softmax": Opcode.SOFTMAX, "layer_norm": Opcode.LAYERNORM,
              "rms_norm": Opcode.RMSNORM, "lut": Opcode.LUT, "mul": Opcode.EMUL}
#: attention parameter rows: (bias 0, mult, shift) of the scores, then of the output
ATTENTION_PARAM_ROWS = 6


def _segs(length, dim):
    return ceil_div(length, dim)


def param_rows(g, dim):
    """Accumulator rows the layer's parameters take in a parameter buffer."""
    if g.kind == "gemm":
        return 3 * ceil_div(g.n, dim)
    if g.kind.startswith("attention"):
        return ATTENTION_PARAM_ROWS
    return {"layer_norm": 2, "rms_norm": 1}.get(g.op, 0) * _segs(g.k, dim)


def _attention_shape(g, dim):
    """(k-tiles per head, Sk segments): a head starts on a k-tile (padded with zero lanes when
    ``dh`` is not a multiple of ``dim``)"""
    return _segs(g.dh, dim), _segs(g.sk, dim)


def needs(tg, dim):
    """Rows of each double buffer (``a``, ``b``, ``c``, ``o``, ``r``) a tile of layer ``tg`` uses."""
    g, tm = tg.gemm, tg.tm
    if g.kind.startswith("attention_"):
        return attention_parts.needs(tg, dim)
    if g.kind == "sfu":
        segs = _segs(g.k, dim)
        b = tm * segs if g.op == "mul" else (chip.SFU_LUT_ENTRIES // dim if g.op == "lut" else 0)
        return {"a": tm * segs, "b": b, "o": tm * segs}
    kth, sks = _attention_shape(g, dim)
    ni, mr = _items_rows(g, tm)
    pairs = ni * tg.kc               # (item, head) pairs of the batched GEMMs
    keys = pairs * kth * sks * dim
    return {"a": pairs * kth * mr + keys, "b": keys, "c": pairs * max(sks, kth) * mr,
            "o": pairs * max(sks, kth) * mr}


def _items_rows(g, rows):
    """(batch items, query rows per item) of an attention tile of ``rows`` rows: whole items
    when ``rows >= Sq``, else rows of one item."""
    return (rows // g.sq, g.sq) if rows >= g.sq else (1, rows)


def _tile_items(g, t):
    """(first batch item, items, query rows per item) of attention tile ``t``."""
    return (t.m0 // g.sq,) + _items_rows(g, t.rows)


def _fits(tg, bufs, dim):
    return all(rows <= bufs[f"{kind}0"].rows for kind, rows in needs(tg, dim).items())


def _largest_tm(make, limit, bufs, dim):
    """The largest tile rows ``tm <= limit`` whose tiling ``make(tm)`` fits the buffers (fits is
    monotonic in tm), or 0."""
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _fits(make(mid), bufs, dim):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _check_length(g, length, limit, what):
    if length > limit:
        raise CompileError(g.where, f"{what} of {length} elements: the SFU takes at most {limit}")


def tile_special(g, caps, bufs, param_buf, param_base, first_tile, first_step):
    """A special-function layer -> TiledGemm: tiles of ``tm`` whole rows, the largest that fits
    while leaving at least two tiles (so loads, the SFU and stores overlap)."""
    dim = caps.dim
    _check_length(g, g.k, chip.SFU_NORM_MAX_LEN if g.op in ("layer_norm", "rms_norm")
                  else chip.SFU_MAX_LEN, "a row")
    segs = _segs(g.k, dim)
    make = lambda tm: TiledGemm(g, tm, segs, segs, param_buf, param_base)   # noqa: E731
    limit = min(0xFFFF, max(1, ceil_div(g.m, 2)))
    tm = _largest_tm(make, limit, bufs, dim)
    if tm < 1:
        raise CompileError(g.where, f"one row of {g.k} elements ({segs} segments) does not fit "
                                    f"the buffers (a {bufs['a0'].rows}, o {bufs['o0'].rows} rows)")
    tg = make(tm)
    _add_tiles(tg, [(m0, min(g.m, m0 + tm), 0, g.n) for m0 in range(0, g.m, tm)],
               first_tile, first_step, g.k)
    return tg


def fits_on_chip(g, caps, bufs):
    """Whether the fused attention layer has a tiling (K and V of a head group on chip); else
    ``compiler.attention_parts.decompose`` runs it through host memory."""
    try:
        tile_attention(g, caps, bufs, "p0", bufs["p0"].base, 0, 0)
    except CompileError:
        return False
    return True


#: how :func:`tile_attention` picks the items per tile: ``"estimate"`` (the least
#: :func:`_pipeline_estimate`, then the fewest tiles) or ``"fewest"`` (as many as fit)
ATTENTION_TILING = "estimate"


def tile_attention(g, caps, bufs, param_buf, param_base, first_tile, first_step):
    """An attention layer -> TiledGemm (``kc`` = heads per group, ``tm`` = rows per tile). A tile
    is a group of ``kc`` heads x either ``tm < Sq`` query rows of one batch item or ``tm // Sq``
    WHOLE items (``tm`` a multiple of ``Sq``, the items spread evenly over the tiles). The head
    group and the rows of one item: the fewest tiles per item that fit, the larger group on a
    tie (fewer K/V DMAs: one per item and key run covers the group's columns). When a whole
    item fits, the items per tile: by :data:`ATTENTION_TILING`, by default the least
    :func:`_pipeline_estimate` (more items per tile save per-tile commands, fewer keep the next
    tile's loads overlapping this tile's compute), the fewest tiles on a tie."""
    dim = caps.dim
    _check_length(g, g.sk, chip.SFU_MAX_LEN, "a key sequence")
    kth, sks = _attention_shape(g, dim)
    best = None
    for hg in [h for h in range(g.heads, 0, -1) if g.heads % h == 0]:
        if hg > 256 or sks > 0xFFF or kth > 0xFFF:
            continue
        make = lambda tm, hg=hg: TiledGemm(g, tm, hg, hg * kth, param_buf, param_base)  # noqa: E731
        tm = _largest_tm(make, min(g.sq, 0xFFFF), bufs, dim)
        if tm < 1 or max(kth * tm, kth * sks * dim, sks * tm) > 0xFFFF:
            continue
        tiles = ceil_div(g.sq, tm) * (g.heads // hg)
        if best is None or tiles < best[0]:
            best = (tiles, hg, tm, make)
    if best is None:
        raise CompileError(g.where, f"no tile of one query row and one head fits the buffers: "
                                    f"K and V of {g.sk} keys x {g.dh} channels need "
                                    f"{needs(TiledGemm(g, 1, 1, kth, '', 0), dim)} rows, the "
                                    f"buffers have a {bufs['a0'].rows}, b {bufs['b0'].rows}, c "
                                    f"{bufs['c0'].rows}, o {bufs['o0'].rows}")
    _, hg, tm, make = best
    if tm == g.sq and g.batches > 1:            # whole items: up to as many as fit (<= 256 pairs)
        most = _largest_tm(lambda n: make(n * g.sq), min(g.batches, 256 // hg, 0xFFFF // g.sq),
                           bufs, dim)
        counts = sorted({ceil_div(g.batches, ceil_div(g.batches, n)) for n in range(1, most + 1)})
        if ATTENTION_TILING == "estimate":
            tm = g.sq * min(counts, key=lambda n: (
                _pipeline_estimate(g, caps, hg, _attention_rows(g, n * g.sq)), -n))
        else:
            tm = g.sq * counts[-1]
    tg = make(tm)
    rects = [(m0, m1, h0 * g.dh, (h0 + hg) * g.dh) for m0, m1 in _attention_rows(g, tm)
             for h0 in range(0, g.heads, hg)]
    _add_tiles(tg, rects, first_tile, first_step, g.n)
    return tg


def _attention_rows(g, tm):
    """The row ranges of an attention's tiles of ``tm`` rows (whole items when ``tm >= Sq``)."""
    if tm >= g.sq:
        ni = tm // g.sq
        return [(b * g.sq, min(g.batches, b + ni) * g.sq) for b in range(0, g.batches, ni)]
    return [(b * g.sq + i, b * g.sq + min(g.sq, i + tm))
            for b in range(g.batches) for i in range(0, g.sq, tm)]


def _pipeline_estimate(g, caps, hg, rows):
    """Cycles of the attention's tiles (``rows`` ranges x head groups of ``hg``) from
    ``compiler.cost``'s command cycles, as a pipeline: the first tile's loads, then per tile the
    longer of its busiest compute engine (consecutive tiles alternate compute queues, so one
    tile's dependent chain overlaps the next one's commands on the other engines) and the next
    tile's loads, then the last tile's whole chain (its commands one after the other, each with
    the issue and retire latencies of the BARRIERs between them). Loads: one DMA per item, head
    chunk and key run."""
    from . import cost
    dim = caps.dim
    kth, _ = _attention_shape(g, dim)
    lat = cost.DISPATCH + cost.START_LAT + cost.RETIRE_LAT
    paged = getattr(g.k, "paged", None) is not None
    stages = []
    for m0, m1 in rows:
        t = Tile(0, m0, m1, 0, hg * g.dh)
        _, ni, mr = _tile_items(g, t)
        keys, pairs = _tile_keys(g, t), ni * hg
        kts = _segs(keys, dim)
        runs = [min(PAGE_TOKENS, keys - k) for k in range(0, keys, PAGE_TOKENS)] if paged else [keys]
        load = 0
        for c0, c1, _ in _head_chunks(g, t, dim):
            planes = _segs(c1 - c0, dim)
            load += ni * (cost.dma_cycles(mr, planes, dim, caps) + 2 * sum(
                cost.dma_cycles(n, planes, dim, caps) for n in runs) + (2 * len(runs) + 1) * lat)
        gemm = (cost.gemm_cycles(mr, kth, kts, caps, pairs, b_transpose=True)
                + cost.gemm_cycles(mr, kts, kth, caps, pairs))
        vec = 2 * (cost.VEC_SETUP + cost.VEC_PIPE) + pairs * (kts + kth) * mr
        sfu = pairs * cost.sfu_cycles(Opcode.SOFTMAX, mr, keys, caps)
        stages += [(load, max(gemm, vec, sfu), gemm + vec + sfu + (4 + pairs) * lat)] \
            * (g.heads // hg)
    total = stages[0][0] + stages[-1][2]
    for (_, busy, _), (ld, _, _) in zip(stages, stages[1:]):
        total += max(busy, ld)
    return total


def _add_tiles(tg, rects, first_tile, first_step, k):
    for i, (m0, m1, n0, n1) in enumerate(rects):
        t = Tile(first_tile + i, m0, m1, n0, n1)
        t.steps.append(Step(first_step + i, 0, k, True, True))
        tg.tiles.append(t)


def verify_layer(tg, buffers, dim, tile_no, step_no):
    """TiledProgram.verify for a special-function or attention layer: tiles and steps numbered
    in order from ``tile_no`` / ``step_no`` (returned advanced), every tile fitting the buffers
    and the parameters their buffer, the tiles covering the output once (an attention tile within
    one batch item or whole items, and whole heads). Raises CompileError naming the layer."""
    g, where = tg.gemm, tg.gemm.where
    pb = buffers[tg.param_buf]
    if not (pb.base <= tg.param_base and tg.param_base + param_rows(g, dim) <= pb.base + pb.rows):
        raise CompileError(where, f"parameters outside buffer {tg.param_buf!r}")
    if g.kind.startswith("attention_"):
        return attention_parts.verify_part(tg, buffers, dim, tile_no, step_no)
    for kind, rows in needs(tg, dim).items():
        if rows > buffers[f"{kind}0"].rows:
            raise CompileError(where, f"tile needs {rows} rows of buffer {kind}, it has "
                                      f"{buffers[kind + '0'].rows}")
    if not (pb.base <= tg.param_base and tg.param_base + param_rows(g, dim) <= pb.base + pb.rows):
        raise CompileError(where, f"parameters outside buffer {tg.param_buf!r}")
    unit = g.dh if g.kind == "attention" else g.n
    cover = np.zeros((g.m, ceil_div(g.n, unit)), np.int32)
    for t in tg.tiles:
        s = t.steps[0] if len(t.steps) == 1 else None
        if t.index != tile_no or s is None or s.index != step_no:
            raise CompileError(where, f"tile {t.index} / its step out of order (expected tile "
                                      f"{tile_no} with the one step {step_no})")
        tile_no, step_no = tile_no + 1, step_no + 1
        if not (0 <= t.m0 < t.m1 <= g.m and 0 <= t.n0 < t.n1 <= g.n) or t.rows > tg.tm \
                or t.n0 % unit or t.n1 % unit:
            raise CompileError(where, f"tile [{t.m0}:{t.m1}, {t.n0}:{t.n1}] is malformed")
        if g.kind == "attention" and (
                (t.m0 // g.sq != (t.m1 - 1) // g.sq and (t.m0 % g.sq or t.m1 % g.sq))
                or t.rows // g.sq * tg.kc > 256 or (t.n1 - t.n0) // unit != tg.kc):
            raise CompileError(where, f"tile [{t.m0}:{t.m1}, {t.n0}:{t.n1}] is neither rows of "
                                      f"one batch item nor whole items (at most 256 (item, "
                                      f"head) pairs), or not one group of {tg.kc} heads")
        cover[t.m0:t.m1, t.n0 // unit:t.n1 // unit] += 1
    if cover.min() != 1 or cover.max() != 1:
        raise CompileError(where, "tiles do not cover the output exactly once")
    return tile_no, step_no


def params_data(g, dim):
    """The layer's parameter rows (int32, ``dim`` lanes each) as loaded into its parameter
    buffer, or None."""
    if g.kind.startswith("attention"):
        a = g.attrs
        rows = [0, a["score_mult"], a["score_shift"], 0, a["mult"], a["shift"]]
        return np.repeat(np.asarray(rows, np.int32)[:, None], dim, axis=1)
    if g.op not in ("layer_norm", "rms_norm"):
        return None
    segs = _segs(g.k, dim)
    vecs = [g.attrs["gamma"]] + ([g.attrs["beta"]] if g.op == "layer_norm" else [])
    out = np.zeros((len(vecs), segs * dim), np.int32)
    for i, v in enumerate(vecs):
        out[i, :g.k] = v
    return out.reshape(-1, dim)


def _zp(v):
    return int(v) & 0xFF


class SpecialScheduling:
    """The special-function and attention layers' part of ``passes._Scheduler`` (a mixin: it uses
    the scheduler's emitter, buffers, events and queue bookkeeping)."""

    # ---- load queue
    def special_loads(self, L, j, t, s, params):
        from .passes import EV_LOADED, LOAD_Q, HostAddr
        em, g, dim = self.em, L.g, self.dim
        a, b = (self.slot_base(L, s, kind) for kind in "ab")
        if g.kind == "attention":
            self.attention_step_loads(L, t, s, a, b)
        else:
            self.step_free(L, s)
            self.operands_stored(L)
            for host, local, what in [(L.a, a, "x")] + ([(L.w, b, "y")] if g.op == "mul" else []):
                self.rows_load(HostAddr(host, t.m0 * g.k), g.k, t.rows, g.k, local, t.rows,
                               f"{g.name}: load {what}[{t.m0}:{t.m1}]")
            if g.op == "lut":
                n = chip.SFU_LUT_ENTRIES
                for c in tiled_dma(Opcode.DMA_LOAD, host_addr=HostAddr(L.table, 0),
                                   host_row_stride=dim, rows=n // dim, cols=dim, elem_bytes=1,
                                   local_addr=b, local_plane_stride=n // dim, local_row_stride=1,
                                   dim=dim):
                    em.add(LOAD_Q, c, f"{g.name}: load table")
        if params and L.params is not None:
            self.special_param_load(L, j)
        em.signal(LOAD_Q, EV_LOADED, s.index + 1, f"{g.name}: step {s.index} loaded")

    def attention_step_loads(self, L, t, s, a, b):
        """An attention step's loads into its slot (:meth:`attention_slots`)."""
        from .passes import LOAD_Q
        g, em = L.g, self.em
        back = s.index - self.attention_slots(L)
        if back < L.first_step:
            # the slot's first use in this layer: a second-half slot's buffer was waited for
            # by step s - 2's loads, earlier on this queue
            if s.index < L.first_step + 2:
                self.step_free(L, s)
            self.operands_stored(L)
            self.attention_loads(L, t, a, b, "QKV")
            return
        # the slot's last step is this layer's: K (in b) is free once its scores are, so the
        # loads run during that step's softmax and P·V; Q and V (in a) wait for the step
        self.operands_stored(L)
        em.wait(LOAD_Q, self.ev_scored[self.cqs.index(self.queue_of[back])], back + 1,
                f"{g.name}: K slot of step {back} free")
        self.attention_loads(L, t, a, b, "K")
        em.wait(LOAD_Q, self.computed(back), back + 1, f"{g.name}: slot of step {back} free")
        self.attention_loads(L, t, a, b, "QV")

    def attention_slots(self, L):
        """Steps of an attention layer whose operands the a/b double buffers hold at once: 4
        (each buffer halved) when a tile fits half a buffer, so the loads run two items ahead;
        else 2 (and 2 for every other layer)."""
        if L.slots is None:
            need, bufs = needs(L.tg, self.dim), self.bufs
            half = L.g.kind == "attention" and all(
                need.get(k, 0) <= bufs[f"{k}0"].rows // 2 for k in "ab")
            L.slots = 4 if half else 2
        return L.slots

    def slot_base(self, L, s, kind):
        """The first row of step s's operand slot in buffer ``kind`` ("a" or "b"): the buffer
        of its parity, its second half for every other pair of an attention layer's steps
        (:meth:`attention_slots`)."""
        buf = self.bufs[f"{kind}{s.buf}"]
        if self.attention_slots(L) == 2:
            return buf.base
        return buf.base + (buf.rows // 2) * (((s.index - L.first_step) // 2) % 2)

    def step_free(self, L, s):
        """Wait on the load queue until a{sb}/b{sb} are free: step s - 2 is done."""
        from .passes import LOAD_Q
        if s.index >= 2:
            self.em.wait(LOAD_Q, self.computed(s.index - 2), s.index - 1,
                         f"{L.g.name}: a{s.buf}/b{s.buf} free")
        self.a_free(s.buf, s, None, f"{L.g.name}: a{s.buf} free")

    def operands_stored(self, L):
        """Wait on the load queue for the layer's inputs from host memory, once."""
        from .passes import EV_STORED, LOAD_Q
        if L.a_wait:
            self.em.wait(LOAD_Q, EV_STORED, L.a_wait, f"{L.g.name}: operands stored")
            L.a_wait = 0

    def rows_load(self, host, stride, rows, cols, local, plane_stride, note):
        """``rows`` x ``cols`` int8 from host (``stride`` bytes per row) in the A layout."""
        from .passes import LOAD_Q
        for c in tiled_dma(Opcode.DMA_LOAD, host_addr=host, host_row_stride=stride, rows=rows,
                           cols=cols, elem_bytes=1, local_addr=local,
                           local_plane_stride=plane_stride, local_row_stride=1, dim=self.dim):
            self.em.add(LOAD_Q, c, note)

    def zero_rows(self, local, rows, planes, stride, note):
        from .passes import LOAD_Q
        if rows:
            self.em.add(LOAD_Q, Opcode.DMA_LOAD, note, host_addr=0, host_row_stride=0,
                        host_plane_stride=0, row_bytes=0, rows=rows, planes=planes,
                        local_addr=local, local_row_stride=1, local_plane_stride=stride)

    def attention_loads(self, L, t, a, b, parts):
        """Per item of the tile: of ``parts`` ("Q", "K", "V"), its Q rows and its K and V (one DMA
        per page of a paged cache) into the slots of its (item, head) pairs; then the K/V rows
        past the keys zeroed."""
        from .passes import HostAddr
        g, dim = L.g, self.dim
        kth, sks = _attention_shape(g, dim)
        hg = (t.n1 - t.n0) // g.dh
        b0, ni, mr = _tile_items(g, t)
        d, span = g.n, sks * dim         # span: rows of one K k-tile / one V n-tile
        v = a + ni * hg * kth * mr
        keys = _tile_keys(g, t)
        for i in range(ni):
            m0 = t.m0 + i * mr
            for c0, c1, h in _head_chunks(g, t, dim):
                cols, off = f"{c0}:{c1}", (i * hg + h) * kth
                if "Q" in parts:
                    self.rows_load(HostAddr(L.q, m0 * d + c0), d, mr, c1 - c0, a + off * mr, mr,
                                   f"{g.name}: load Q[{m0}:{m0 + mr}, {cols}]")
                for what, tensor, host, local in (("K", g.k, L.k, b), ("V", g.v, L.v, v)):
                    if what not in parts:
                        continue
                    for k0, n, addr in _key_runs(g, tensor, host, b0 + i, keys, c0):
                        self.rows_load(addr, d, n, c1 - c0, local + off * span + k0, span,
                                       f"{g.name}: load {what} item {b0 + i} [{k0}:{k0 + n}, "
                                       f"{cols}]")
        pad = _segs(keys, dim) * dim - keys
        for base, what in ((b, "K"), (v, "V")):
            if what in parts:
                self.zero_rows(base + keys, pad, ni * hg * kth, span,
                               f"{g.name}: zero {what} past key {keys}")

    def special_param_load(self, L, j):
        from .passes import LOAD_Q, HostAddr
        g, dim = L.g, self.dim
        if j >= 2:
            self.wait_epilogue(LOAD_Q, self.tiled.gemms[j - 2].tiles[-1].index,
                               f"{g.name}: {L.tg.param_buf} free")
        for c in tiled_dma(Opcode.DMA_LOAD, host_addr=HostAddr(L.params, 0),
                           host_row_stride=4 * dim, rows=L.param_rows, cols=dim, elem_bytes=4,
                           local_addr=L.tg.param_base, local_plane_stride=L.param_rows,
                           local_row_stride=1, dim=dim, acc=1):
            self.em.add(LOAD_Q, c, f"{g.name}: load parameters")

    # ---- compute queue
    def special_compute(self, L, t, s):
        from .passes import EV_EPILOGUE, EV_LOADED
        em, g = self.em, L.g
        q = self.queue_of[s.index] = self.pick_queue(L, t, s)
        self.epi_queue[t.index] = q
        if g.kind == "attention":
            self.wait_epilogue(q, t.index - 2, f"{g.name}: c{t.buf} free")
        self.o_free(q, t, g.name)
        em.wait(q, EV_LOADED, s.index + 1, f"{g.name}: step {s.index} operands")
        if g.kind == "attention":
            self.attention_commands(L, t, s, q)
        else:
            self.sfu_commands(L, t, s, q)
        em.signal(q, self.computed(s.index), s.index + 1, f"{g.name}: step {s.index} done")
        if g.kind == "attention":
            self.attention_epilogue(L, t, q)
        em.signal(q, EV_EPILOGUE[self.cqs.index(q)], t.index + 1, f"{g.name}: tile {t.index} done")
        if g.kind == "attention":     # per item, its rows of the group's head columns
            kth = _attention_shape(g, self.dim)[0]
            hg, (_, ni, mr) = (t.n1 - t.n0) // g.dh, _tile_items(g, t)
            self.store_parts(L, t, [((t.m0 + i * mr) * g.n + c0, c1 - c0, (i * hg + h) * kth * mr)
                                    for i in range(ni)
                                    for c0, c1, h in _head_chunks(g, t, self.dim)], g.n, mr)
        else:
            self.store(L, t)

    def sfu_commands(self, L, t, s, q):
        g, a = L.g, L.g.attrs
        src, dst = self.bufs[f"a{s.buf}"].base, self.bufs[f"o{t.buf}"].base
        b = self.bufs[f"b{s.buf}"].base
        common = dict(rows=t.rows, length=g.k, seg_stride=t.rows)
        op = SFU_OPCODE[g.op]
        note = f"{g.name}: {g.op} rows [{t.m0}:{t.m1}]"
        if g.op == "softmax":
            for r0, r1, off in _causal_blocks(g, t) if a["causal"] else [(t.m0, t.m1, 0)]:
                self.em.add(q, op, f"{g.name}: softmax rows [{r0}:{r1}]", src_addr=src + r0 - t.m0,
                            dst_addr=dst + r0 - t.m0, rows=r1 - r0, length=g.k, seg_stride=t.rows,
                            mult=a["mult"],
                            causal=int(a["causal"]), mask_offset=off)
        elif g.op in ("layer_norm", "rms_norm"):
            segs = _segs(g.k, self.dim)
            mant, exp = a["eps"]
            self.em.add(q, op, note, src_addr=src, dst_addr=dst, gamma_addr=L.tg.param_base,
                        beta_addr=L.tg.param_base + (segs if g.op == "layer_norm" else 0),
                        shift=a["shift"], in_zero_point=_zp(g.a.zero_point),
                        out_zero_point=_zp(g.output.zero_point), eps_mant=mant, eps_exp=exp,
                        **common)
        elif g.op == "lut":
            self.em.add(q, op, note, src_addr=src, dst_addr=dst, table_addr=b, **common)
        else:
            self.em.add(q, op, note, a_addr=src, b_addr=b, dst_addr=dst, mult=a["mult"],
                        shift=a["shift"], a_zero_point=_zp(g.a.zero_point),
                        b_zero_point=_zp(g.b.zero_point), out_zero_point=_zp(g.output.zero_point),
                        **common)

    def attention_commands(self, L, t, s, q):
        """The batched GEMMs run over the tile's (item, head) pairs, pair ``p = i * hg + h``
        ``kth * mr`` rows apart in Q and the output, ``kth * span`` in K and V; one SOFTMAX per
        pair, with its item's mask offset. The scores' SIGNAL frees K's buffer."""
        g, a, em, dim = L.g, L.g.attrs, self.em, self.dim
        kth, sks = _attention_shape(g, dim)
        hg = (t.n1 - t.n0) // g.dh
        b0, ni, mr = _tile_items(g, t)
        pairs = ni * hg
        keys = _tile_keys(g, t)
        kts = _segs(keys, dim)           # key tiles this tile uses (fewer below a causal diagonal)
        qa, kb = self.slot_base(L, s, "a"), self.slot_base(L, s, "b")
        va = qa + pairs * kth * mr
        c, o, p = self.bufs[f"c{t.buf}"].base, self.bufs[f"o{t.buf}"].base, L.tg.param_base
        span = sks * dim
        heads = f"heads {t.n0 // g.dh}..{t.n1 // g.dh - 1}" + (
            f" items {b0}..{b0 + ni - 1}" if ni > 1 else "")
        em.add(q, Opcode.GEMM, f"{g.name}: scores Q·Kᵀ tile {t.index} {heads}", a_addr=qa,
               b_addr=kb, c_addr=c, m=mr, k_tiles=kth, n_tiles=kts, a_kt_stride=mr,
               b_nt_stride=span, c_nt_stride=mr, accumulate=0, b_transpose=1,
               batches_m1=pairs - 1, a_batch_stride=kth * mr, b_batch_stride=kth * span,
               c_batch_stride=kts * mr)
        # the step reusing this one's slot loads its K once this is scored
        if s.index + self.attention_slots(L) <= L.tg.tiles[-1].steps[-1].index:
            em.signal(q, self.ev_scored[self.cqs.index(q)], s.index + 1,
                      f"{g.name}: step {s.index} scored")
        em.add(q, Opcode.BARRIER, f"{g.name}: scores done")
        em.add(q, Opcode.VECTOR, f"{g.name}: scores to int8", src_addr=c, dst_addr=o,
               rows=pairs * kts * mr, bias_addr=p, mult_addr=p + 1, shift_addr=p + 2, res_addr=0,
               zero_point=0, **{"ops.bias": 0, "ops.relu": 0, "ops.add": 0, "ops.maxred": 0})
        em.add(q, Opcode.BARRIER, f"{g.name}: int8 scores done")
        pos = t.m0 % g.sq
        for i in range(ni):
            for h in range(hg):
                x = o + (i * hg + h) * kts * mr
                item = f"item {b0 + i} " if ni > 1 else ""
                em.add(q, Opcode.SOFTMAX, f"{g.name}: softmax {item}head {t.n0 // g.dh + h}",
                       src_addr=x, dst_addr=x, rows=mr, length=keys, seg_stride=mr,
                       mult=a["softmax_mult"], causal=int(a["causal"]),
                       mask_offset=_mask_offset(g, b0 + i, pos))
        em.add(q, Opcode.BARRIER, f"{g.name}: probabilities done")
        em.add(q, Opcode.GEMM, f"{g.name}: P·V tile {t.index} {heads}", a_addr=o, b_addr=va,
               c_addr=c, m=mr, k_tiles=kts, n_tiles=kth, a_kt_stride=mr, b_nt_stride=span,
               c_nt_stride=mr, accumulate=0, b_transpose=0, batches_m1=pairs - 1,
               a_batch_stride=kts * mr, b_batch_stride=kth * span, c_batch_stride=kth * mr)

    def attention_epilogue(self, L, t, q):
        g = L.g
        kth = _attention_shape(g, self.dim)[0]
        hg = (t.n1 - t.n0) // g.dh
        c, o, p = self.bufs[f"c{t.buf}"].base, self.bufs[f"o{t.buf}"].base, L.tg.param_base
        self.em.add(q, Opcode.VECTOR, f"{g.name}: output tile {t.index}", src_addr=c, dst_addr=o,
                    rows=hg * kth * t.rows, bias_addr=p + 3, mult_addr=p + 4, shift_addr=p + 5,
                    res_addr=0, zero_point=_zp(g.attrs["zero_point"]),
                    **{"ops.bias": 0, "ops.relu": 0, "ops.add": 0, "ops.maxred": 0})


def _key_runs(g, tensor, host, item, keys, c0):
    """``(first key, keys, host address)`` of the DMAs loading keys ``0 .. keys - 1`` of batch
    item ``item`` from ``tensor`` (in host buffer ``host``): one run, or from the KV cache one
    per page at the address its block's launch parameter gives (compiler/kv_cache.py)."""
    from .passes import HostAddr
    paged = getattr(tensor, "paged", None)
    if paged is None:
        return [(0, keys, HostAddr(host, item * g.sk * g.n + c0))]
    return [(k0, min(PAGE_TOKENS, keys - k0),
             HostAddr(host, paged.region + c0, page_param(item, k0 // PAGE_TOKENS)))
            for k0 in range(0, keys, PAGE_TOKENS)]


def _tile_keys(g, t):
    """Keys an attention tile uses: all ``Sk``, or with a causal mask those up to its last query's
    diagonal (the later ones would be masked in every row: not loaded, multiplied or
    normalized; a tile of whole items takes its items' last rows' diagonal, the same for each).
    A paged attention's mask offset is a launch parameter: all its keys."""
    if not g.attrs["causal"] or getattr(g.k, "paged", None) is not None:
        return g.sk
    return min(g.sk, (t.m1 - 1) % g.sq + g.attrs["mask_offset"] + 1)


def _mask_offset(g, item, pos):
    """The SOFTMAX ``mask_offset`` of batch item ``item``'s query rows from ``pos``: a paged
    attention adds the item's first new position, a launch parameter."""
    if not g.attrs["causal"]:
        return 0
    if getattr(g.k, "paged", None) is None:
        return pos + g.attrs["mask_offset"]
    from .passes import PlusParam
    return PlusParam(pos, pos_param(item))


def _head_chunks(g, t, dim):
    """An attention tile's column ranges moved by one DMA each, with the index of their first head
    in the tile's group: the whole group when a head is whole k-tiles, else head by head."""
    if g.dh % dim == 0:
        return [(t.n0, t.n1, 0)]
    return [(c, c + g.dh, (c - t.n0) // g.dh) for c in range(t.n0, t.n1, g.dh)]


def _causal_blocks(g, t):
    """A causal softmax tile's rows split at the ``[Sq, Sk]`` blocks: (r0, r1, mask offset)."""
    sq = g.output.shape[-2]
    out, r = [], t.m0
    while r < t.m1:
        end = min(t.m1, (r // sq + 1) * sq)
        out.append((r, end, r % sq + g.attrs["mask_offset"]))
        r = end
    return out
