"""Attention whose keys do not fit on chip, in three layers through host memory.

When no tile of one query row and one head fits the buffers (K and V of a head group must be on
chip for the fused attention layer, ``compiler.special_layers``), :func:`decompose` replaces the
attention by

1. **scores** (:class:`~compiler.ir.AttentionPart` ``"scores"``): tiles of ``tm`` query rows x
   ``kn`` keys x a group of heads; Q (A layout) in ``a``, the K chunk (A layout, read
   transposed) in ``b``, the batched Q·Kᵀ GEMM into ``c``, its VECTOR requantization into ``o``,
   stored as int8 scores ``[B, heads, Sq, Sk]`` in a host scratch tensor;
2. **softmax**: a special-function layer over the score rows (the causal mask per ``[Sq, Sk]``
   block), probabilities into a second scratch tensor;
3. **P·V** (``"pv"``): tiles of ``tm`` query rows x a group of heads, one step per chunk of
   ``kc`` key tiles (P chunk per head in ``a``, V chunk in the B layout in ``b``), the batched
   GEMMs accumulating in ``c`` on one compute queue, then the VECTOR requantization into ``o`` and
   the store into the output's head columns.

The numerics are the fused layer's, step for step (the same int8 scores, the same SOFTMAX, the
same int32 sums), so the result is the same bits.
"""
from spec.descriptors import Opcode

from .dma import ceil_div
from .errors import CompileError
from .ir import AttentionPart, FusedSpecial, Step, Tile, TiledGemm

__all__ = ["decompose", "heads_matmul_layer", "needs", "tile_part", "verify_part", "AttentionPartScheduling"]


def decompose(g):
    """Attention ``g`` -> [scores, softmax, P·V] layers with their two scratch tensors."""
    from .graph import Tensor
    a = g.attrs
    b, h, sq, sk = g.batches, g.heads, g.sq, g.sk
    scores = Tensor(f"{g.name}.scores", (b, h, sq, sk), "int8", a["score_scale"], 0)
    probs = Tensor(f"{g.name}.probs", (b, h, sq, sk), "int8", 1.0 / 127, 0)
    s = AttentionPart(f"{g.name}.scores", g.nodes, g.q, g.k, g.v, scores, a, part="scores")
    soft = FusedSpecial(f"{g.name}.softmax", g.nodes, "softmax", scores, None, probs,
                        dict(mult=a["softmax_mult"], causal=a["causal"],
                             mask_offset=a["mask_offset"]))
    pv = AttentionPart(f"{g.name}.pv", g.nodes, g.q, g.k, g.v, g.output, a, part="pv", probs=probs)
    return [s, soft, pv]


def heads_matmul_layer(n):
    """A graph ``heads_matmul`` node as the attention part it is: with ``transpose_b`` the scores
    part (``a`` as Q, ``b`` as K), else the P·V part (``a`` as the probabilities, ``b`` as V; the
    output, ``[..., M, heads*N]``, carries the query shape)."""
    a, b = n.inputs
    at = n.attrs
    if at["transpose_b"]:
        attrs = dict(heads=at["heads"], score_mult=at["mult"], score_shift=at["shift"],
                     score_zero_point=at["zero_point"], mult=0, shift=0, zero_point=0,
                     causal=False, mask_offset=0)
        return AttentionPart(n.name, [n], a, b, b, n.output, attrs, part="scores")
    attrs = dict(heads=at["heads"], score_mult=0, score_shift=0, mult=at["mult"],
                 shift=at["shift"], zero_point=at["zero_point"], causal=False, mask_offset=0)
    return AttentionPart(n.name, [n], n.output, b, b, n.output, attrs, part="pv", probs=a)


def _shape(g, dim):
    """(k-tiles per head, key tiles of Sk)"""
    return ceil_div(g.dh, dim), ceil_div(g.sk, dim)


def needs(tg, dim):
    """Rows of each double buffer a tile uses. Scores: ``kc`` = key tiles per tile, ``ng`` =
    heads per group; P·V: ``kc`` = key tiles per step, ``ng`` = heads per group."""
    g, tm, kc, hg = tg.gemm, tg.tm, tg.kc, tg.ng
    kth, _ = _shape(g, dim)
    if g.part == "scores":
        return {"a": tm * hg * kth, "b": hg * kth * kc * dim, "c": hg * kc * tm,
                "o": hg * kc * tm}
    return {"a": hg * kc * tm, "b": hg * kth * kc * dim, "c": hg * kth * tm, "o": hg * kth * tm}


def _fitting(g, bufs, dim, param_buf, param_base):
    """The tiling with the fewest steps (then tiles) that fits: (tm, kc, hg)."""
    kth, sks = _shape(g, dim)
    best = None
    kcs = sorted({ceil_div(sks, j) for j in range(1, sks + 1)}, reverse=True)[:48]
    for hg in [x for x in range(g.heads, 0, -1) if g.heads % x == 0 and x <= 256]:
        for kc in kcs:
            make = lambda tm: TiledGemm(g, tm, kc, hg, param_buf, param_base)   # noqa: E731
            lo, hi = 0, min(g.sq, 0xFFFF)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if all(r <= bufs[f"{k}0"].rows for k, r in needs(make(mid), dim).items()):
                    lo = mid
                else:
                    hi = mid - 1
            tm = lo
            strides = (kth * tm, kth * kc * dim, kc * tm) if g.part == "scores" else \
                (kc * tm, kth * kc * dim, kth * tm)
            if tm < 1 or max(strides) > 0xFFFF or kc > 0xFFF:
                continue
            tiles = g.batches * ceil_div(g.sq, tm) * (g.heads // hg)
            steps = tiles * ceil_div(sks, kc)
            if best is None or (steps, tiles) < best[0]:
                best = ((steps, tiles), make(tm))
    if best is None:
        raise CompileError(g.where, f"attention over {g.sk} keys: not even one query row, one "
                                    f"key tile and one head fit the buffers (a {bufs['a0'].rows}, "
                                    f"b {bufs['b0'].rows}, c {bufs['c0'].rows}, o "
                                    f"{bufs['o0'].rows} rows)")
    return best[1]


def tile_part(g, caps, bufs, param_buf, param_base, first_tile, first_step):
    """Scores: one step per (batch item, query rows, head group, key chunk) tile. P·V: per
    (batch item, query rows, head group) tile one step per key chunk."""
    dim = caps.dim
    tg = _fitting(g, bufs, dim, param_buf, param_base)
    tm, kc, hg = tg.tm, tg.kc, tg.ng
    kn = kc * dim
    tile_no, step_no = first_tile, first_step
    for b in range(g.batches):
        for i in range(0, g.sq, tm):
            m0, m1 = b * g.sq + i, b * g.sq + min(g.sq, i + tm)
            for h0 in range(0, g.heads, hg):
                chunks = [(k0, min(g.sk, k0 + kn)) for k0 in range(0, g.sk, kn)]
                if g.part == "scores":
                    for k0, k1 in chunks:
                        t = Tile(tile_no, m0, m1, k0, k1, h0=h0, h1=h0 + hg)
                        t.steps.append(Step(step_no, k0, k1, True, True))
                        tg.tiles.append(t)
                        tile_no, step_no = tile_no + 1, step_no + 1
                else:
                    t = Tile(tile_no, m0, m1, h0 * g.dh, (h0 + hg) * g.dh, h0=h0, h1=h0 + hg)
                    for k0, k1 in chunks:
                        t.steps.append(Step(step_no, k0, k1, k0 == 0, k1 == g.sk))
                        step_no += 1
                    tg.tiles.append(t)
                    tile_no += 1
    return tg


def verify_part(tg, buffers, dim, tile_no, step_no):
    """TiledProgram.verify for an attention part: numbering, fit, coverage (scores: every
    (row, head, key) once; P·V: every (row, head) once with its keys in order)."""
    import numpy as np
    g, where = tg.gemm, tg.gemm.where
    for kind, rows in needs(tg, dim).items():
        if rows > buffers[f"{kind}0"].rows:
            raise CompileError(where, f"tile needs {rows} rows of buffer {kind}, it has "
                                      f"{buffers[kind + '0'].rows}")
    cover = np.zeros((g.m, g.heads, g.sk if g.part == "scores" else 1), np.int32)
    for t in tg.tiles:
        if t.index != tile_no:
            raise CompileError(where, f"tile {t.index} out of order (expected {tile_no})")
        tile_no += 1
        if not (0 <= t.m0 < t.m1 <= g.m and 0 <= t.h0 < t.h1 <= g.heads) \
                or t.m0 // g.sq != (t.m1 - 1) // g.sq:
            raise CompileError(where, f"tile {t.index} rows [{t.m0}:{t.m1}] heads "
                                      f"[{t.h0}:{t.h1}] are malformed")
        k = 0
        for s in t.steps:
            if s.index != step_no or s.k0 != (k if g.part == "pv" else s.k0) or s.k1 <= s.k0:
                raise CompileError(where, f"step {s.index} keys [{s.k0}:{s.k1}] malformed")
            step_no, k = step_no + 1, s.k1
        if g.part == "scores":
            cover[t.m0:t.m1, t.h0:t.h1, t.n0:t.n1] += 1
        else:
            if k != g.sk or t.steps[0].k0 != 0:
                raise CompileError(where, f"tile {t.index} covers keys up to {k}, not {g.sk}")
            cover[t.m0:t.m1, t.h0:t.h1] += 1
    if cover.min() != 1 or cover.max() != 1:
        raise CompileError(where, "tiles do not cover the output exactly once")
    return tile_no, step_no


class AttentionPartScheduling:
    """The attention parts' share of ``passes._Scheduler`` (a mixin, like SpecialScheduling)."""

    def part_tile(self, L, j, t):
        from .passes import EV_EPILOGUE
        g = L.g
        q = self.cqs[t.index % len(self.cqs)]        # every step of a tile on one queue
        for s in t.steps:
            self.part_loads(L, j, t, s, s is L.tg.tiles[0].steps[0])
            self.queue_of[s.index] = q
            if s.first:
                self.wait_epilogue(q, t.index - 2, f"{g.name}: c{t.buf} free")
            self.part_gemm(L, t, s, q)
        self.epi_queue[t.index] = q
        self.o_free(q, t, g.name)
        p = L.tg.param_base + (0 if g.part == "scores" else 3)
        kth, _ = _shape(g, self.dim)
        per_head = ceil_div(t.n1 - t.n0, self.dim) if g.part == "scores" else kth
        self.em.add(q, Opcode.VECTOR, f"{g.name}: requantize tile {t.index}",
                    src_addr=self.bufs[f"c{t.buf}"].base, dst_addr=self.bufs[f"o{t.buf}"].base,
                    rows=(t.h1 - t.h0) * per_head * t.rows, bias_addr=p, mult_addr=p + 1,
                    shift_addr=p + 2, res_addr=0,
                    zero_point=(g.attrs.get("score_zero_point", 0) if g.part == "scores"
                                else g.attrs["zero_point"]) & 0xFF,
                    **{"ops.bias": 0, "ops.relu": 0, "ops.add": 0, "ops.maxred": 0})
        self.em.signal(q, EV_EPILOGUE[self.cqs.index(q)], t.index + 1, f"{g.name}: tile {t.index} done")
        if g.part == "scores":          # per head: its rows of the [B, heads, Sq, Sk] scores
            b, pos = divmod(t.m0, g.sq)
            kts = ceil_div(t.n1 - t.n0, self.dim)
            parts = [(((b * g.heads + h) * g.sq + pos) * g.sk + t.n0, t.n1 - t.n0,
                      (h - t.h0) * kts * t.rows) for h in range(t.h0, t.h1)]
            self.store_parts(L, t, parts, g.sk)
        else:
            from .special_layers import _head_chunks
            self.store_parts(L, t, [(t.m0 * g.n + c0, c1 - c0, h * kth * t.rows)
                                    for c0, c1, h in _head_chunks(g, t, self.dim)], g.n)

    def part_loads(self, L, j, t, s, params):
        from .passes import EV_LOADED, EV_STORED, LOAD_Q, HostAddr
        from .special_layers import _head_chunks
        g, dim, em = L.g, self.dim, self.em
        if s.index >= 2:
            em.wait(LOAD_Q, self.computed(s.index - 2), s.index - 1, f"{g.name}: a{s.buf}/b{s.buf} free")
        self.a_free(s.buf, s, None, f"{g.name}: a{s.buf} free")
        if L.a_wait:
            em.wait(LOAD_Q, EV_STORED, L.a_wait, f"{g.name}: operands stored")
            L.a_wait = 0
        a, bb = self.bufs[f"a{s.buf}"].base, self.bufs[f"b{s.buf}"].base
        kth, _ = _shape(g, dim)
        b, pos = divmod(t.m0, g.sq)
        keys, kts = s.k1 - s.k0, ceil_div(s.k1 - s.k0, dim)
        span = kts * dim
        cols = [(c0, c1, h) for c0, c1, h in _head_chunks(g, Tile(0, 0, 0, t.h0 * g.dh,
                                                                  t.h1 * g.dh), dim)]
        if g.part == "scores":
            for c0, c1, h in cols:
                self.rows_load(HostAddr(L.a, t.m0 * g.n + c0), g.n, t.rows, c1 - c0,
                               a + h * kth * t.rows, t.rows,
                               f"{g.name}: load Q[{t.m0}:{t.m1}, {c0}:{c1}]")
                self.rows_load(HostAddr(L.w, (b * g.sk + s.k0) * g.n + c0), g.n, keys, c1 - c0,
                               bb + h * kth * span, span,
                               f"{g.name}: load K[{s.k0}:{s.k1}, {c0}:{c1}]")
        else:
            for h in range(t.h0, t.h1):
                row = ((b * g.heads + h) * g.sq + pos) * g.sk + s.k0
                self.rows_load(HostAddr(L.a, row), g.sk, t.rows, keys,
                               a + (h - t.h0) * kts * t.rows, t.rows,
                               f"{g.name}: load P head {h} [{t.m0}:{t.m1}, {s.k0}:{s.k1}]")
            for c0, c1, h in cols:
                self.rows_load(HostAddr(L.w, (b * g.sk + s.k0) * g.n + c0), g.n, keys, c1 - c0,
                               bb + h * kth * span, span,
                               f"{g.name}: load V[{s.k0}:{s.k1}, {c0}:{c1}]")
        self.zero_rows(bb + keys, span - keys, (t.h1 - t.h0) * kth, span,
                       f"{g.name}: zero {'K' if g.part == 'scores' else 'V'} past key {s.k1}")
        if params and L.params is not None:
            self.special_param_load(L, j)
        em.signal(LOAD_Q, EV_LOADED, s.index + 1, f"{g.name}: step {s.index} loaded")

    def part_gemm(self, L, t, s, q):
        from .passes import EV_LOADED
        g, dim, em = L.g, self.dim, self.em
        kth, _ = _shape(g, dim)
        hg, mr, kts = t.h1 - t.h0, t.rows, ceil_div(s.k1 - s.k0, dim)
        a, b = self.bufs[f"a{s.buf}"].base, self.bufs[f"b{s.buf}"].base
        c, span = self.bufs[f"c{t.buf}"].base, kts * dim
        em.wait(q, EV_LOADED, s.index + 1, f"{g.name}: step {s.index} operands")
        if g.part == "scores":
            em.add(q, Opcode.GEMM, f"{g.name}: Q·Kᵀ step {s.index}", a_addr=a, b_addr=b, c_addr=c,
                   m=mr, k_tiles=kth, n_tiles=kts, a_kt_stride=mr, b_nt_stride=span,
                   c_nt_stride=mr, accumulate=0, b_transpose=1, batches_m1=hg - 1,
                   a_batch_stride=kth * mr, b_batch_stride=kth * span, c_batch_stride=kts * mr)
        else:
            em.add(q, Opcode.GEMM, f"{g.name}: P·V step {s.index}", a_addr=a, b_addr=b, c_addr=c,
                   m=mr, k_tiles=kts, n_tiles=kth, a_kt_stride=mr, b_nt_stride=span,
                   c_nt_stride=mr, accumulate=int(not s.first), b_transpose=0,
                   batches_m1=hg - 1, a_batch_stride=kts * mr, b_batch_stride=kth * span,
                   c_batch_stride=kth * mr)
        em.signal(q, self.computed(s.index), s.index + 1, f"{g.name}: step {s.index} done")
