"""Weight-stationary systolic array of int8 multiply-accumulate cells (Gemmini's WS dataflow)."""
from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

MAX_DIM = 64


class PEArray(wiring.Component):
    """``dim`` × ``dim`` processing elements computing ``out[n] = sum_k a[k] * W[k][n]`` per A row.

    Dataflow (weight stationary). PE ``(i, j)`` holds weight ``W[k=i][n=j]`` in each of its two banks.
    Element ``k`` of an A row enters PE row ``k`` from the left, delayed ``k`` cycles (input skew,
    done here), and moves one PE to the right per cycle; partial sums (int32, wrapping) move one PE
    down per cycle; column ``n`` leaves the bottom ``n`` cycles late and is delayed ``dim-1-n``
    cycles (output de-skew), so every A row comes out as one row of ``dim`` int32 sums.

    Every A element carries a ``valid`` bit and a weight-bank bit along with it: each PE multiplies
    with the bank the element names, so consecutive rows may use different banks (switching tiles
    needs no drain) and bubbles (``a_valid`` low) may sit anywhere. Invalid elements are forced to
    zero (no toggling in the multipliers) and produce no output row.

    Only the valid bits are reset; data, bank bits, partial sums and weights are not (weights are
    undefined until loaded).

    Latency: an A row presented in cycle ``t`` leaves on ``out_*`` in cycle ``t + latency``,
    ``latency = 2*dim - 1``. One row per cycle, no stalls.

    Weight loads are row writes that travel across the array like an A row: ``w_en`` writes
    ``w_data`` into PE row ``w_row`` of bank ``w_bank``, PE ``(w_row, j)`` at the end of cycle
    ``w + j`` for a write presented in cycle ``w`` (a register chain carries the write one column
    per cycle). With ``w_transpose`` the same write goes into PE *column* ``w_row`` instead
    (element ``k`` of ``w_data`` into PE ``(k, w_row)``, all of them in cycle ``w + w_row``): a B
    tile stored transposed loads column by column. An element presented in cycle ``t`` reads PE
    ``(r, j)`` in cycle ``t + r + j``. So, for an element of bank ``b`` presented in cycle ``t``:

    * it is safe to write row ``k`` of bank ``b`` in cycle ``w`` iff ``t + k <= w`` (a column
      write: iff ``t + dim - 1 <= w``) -- the write skew follows the element, so a tile's rows
      can replace the weights of the rows just behind the last element of the tile before;
    * it sees the new weights of row ``k`` written in cycle ``w`` iff ``t >= w + 1 - k`` (of a
      column written in cycle ``w``: iff ``t >= w + 1``); rows written in order, one a cycle or
      slower, are all seen by an element presented the cycle after the last one.

    The caller guarantees both; ``w_conflict`` flags a violation of the first (a simulation
    monitor computed from the in-flight valid/bank bits, not needed for operation).

    Ports
    -----
    a_data     : In(dim*8)   — one A row, element ``k`` is int8 bits ``[8k, 8k+8)``.
    a_valid    : In(1)       — ``a_data`` is a real row (else a bubble).
    a_bank     : In(1)       — weight bank this row multiplies with.
    w_en       : In(1)       — write one weight row (or column), skewed as above.
    w_row      : In(range(dim)) — log2(dim) bits: PE row ``k`` written (B row ``k`` of the tile),
                               or PE column ``k`` with ``w_transpose``.
    w_transpose: In(1)       — write a column (B column ``k``) instead of a row.
    w_bank     : In(1)       — weight bank written.
    w_data     : In(dim*8)   — the weights, element ``n`` is int8 bits ``[8n, 8n+8)``.
    out_data   : Out(dim*32) — result row, element ``n`` is int32 bits ``[32n, 32n+32)`` (registered).
    out_valid  : Out(1)      — ``out_data`` holds the result of a valid A row (registered).
    w_conflict : Out(1)      — a weight write reaching its PEs this cycle hits a PE still needed
                               by an in-flight A element of the same bank (a hazard; monitor only).
    """

    def __init__(self, dim):
        # A rejected instance is not an unused one: keep Amaranth's UnusedElaboratable quiet.
        self._MustUse__silence = True
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise ValueError(f"PEArray dim must be an int, not {dim!r}")
        if not 2 <= dim <= MAX_DIM:
            raise ValueError(f"PEArray dim must be in 2..{MAX_DIM}, not {dim}")
        self._MustUse__silence = False
        self.dim = dim
        self.latency = 2 * dim - 1
        super().__init__({
            "a_data": In(dim * 8),
            "a_valid": In(1),
            "a_bank": In(1),
            "w_en": In(1),
            "w_row": In(range(dim)),
            "w_transpose": In(1),
            "w_bank": In(1),
            "w_data": In(dim * 8),
            "out_data": Out(dim * 32),
            "out_valid": Out(1),
            "w_conflict": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.dim

        # Elements that will still read PE row i's weights after this cycle, as (valid, bank,
        # column p read now) triples, p < 0 while in the input skew: the array input (p = -i),
        # the skew registers of row i and the elements now between PEs (i, j) and (i, j+1) for
        # j+1 <= dim-2 (an element at the input of the last PE reads only now).
        pending = [[(self.a_valid, self.a_bank, -i)] for i in range(d)]

        # The weight write of column j is the input's, j cycles late (a chain of registers).
        wr_layout = data.StructLayout({"en": 1, "row": range(d), "transpose": 1, "bank": 1,
                                       "data": d * 8})
        wcol = [Signal(wr_layout, name="wcol0")]
        m.d.comb += wcol[0].eq(Cat(self.w_en, self.w_row, self.w_transpose, self.w_bank,
                                   self.w_data))
        for j in range(1, d):
            q = Signal(wr_layout, name=f"wcol{j}")
            m.d.sync += q.eq(wcol[-1])
            wcol.append(q)
        written = [[None] * d for _ in range(d)]

        psum_above = [None] * d          # psum_above[j]: partial sum entering row i of column j
        bottom_valid = None
        for i in range(d):
            # Input skew: row i's element enters PE (i, 0) i cycles after the row is presented.
            a = Mux(self.a_valid, self.a_data[8 * i:8 * i + 8], 0)
            v, b = self.a_valid, self.a_bank
            for s in range(i):
                a_q = Signal(8, name=f"skew{i}_{s}_a", reset_less=True)
                v_q = Signal(name=f"skew{i}_{s}_v")
                b_q = Signal(name=f"skew{i}_{s}_bank", reset_less=True)
                m.d.sync += [a_q.eq(a), v_q.eq(v), b_q.eq(b)]
                a, v, b = a_q, v_q, b_q
                pending[i].append((v_q, b_q, s + 1 - i))

            for j in range(d):
                wr = wcol[j]
                w0 = Signal(signed(8), name=f"pe{i}_{j}_w0", reset_less=True)
                w1 = Signal(signed(8), name=f"pe{i}_{j}_w1", reset_less=True)
                w_sel = wr.en & Mux(wr.transpose, wr.row == j, wr.row == i)
                w_new = Mux(wr.transpose, wr.data[8 * i:8 * i + 8], wr.data[8 * j:8 * j + 8])
                written[i][j] = w_sel
                with m.If(w_sel):
                    with m.If(wr.bank):
                        m.d.sync += w1.eq(w_new)
                    with m.Else():
                        m.d.sync += w0.eq(w_new)
                prod = a.as_signed() * Mux(b, w1, w0)
                psum = Signal(signed(32), name=f"pe{i}_{j}_psum", reset_less=True)
                m.d.sync += psum.eq(prod if psum_above[j] is None else psum_above[j] + prod)
                psum_above[j] = psum
                if j < d - 1:
                    a_q = Signal(8, name=f"pe{i}_{j}_a", reset_less=True)
                    v_q = Signal(name=f"pe{i}_{j}_v")
                    b_q = Signal(name=f"pe{i}_{j}_bank", reset_less=True)
                    m.d.sync += [a_q.eq(a), v_q.eq(v), b_q.eq(b)]
                    if j + 1 <= d - 2:
                        pending[i].append((v_q, b_q, j + 1))
                    a, v, b = a_q, v_q, b_q
                elif i == d - 1:
                    # The valid bit of the bottom-right PE's sum: the last column needs no de-skew.
                    bottom_valid = Signal(name="out_valid_q")
                    m.d.sync += bottom_valid.eq(v)

        # Output de-skew: column j leaves the bottom dim-1-j cycles before column dim-1.
        cols = []
        for j in range(d):
            x = psum_above[j]
            for s in range(d - 1 - j):
                x_q = Signal(signed(32), name=f"deskew{j}_{s}", reset_less=True)
                m.d.sync += x_q.eq(x)
                x = x_q
            cols.append(x)
        m.d.comb += [self.out_data.eq(Cat(*cols)), self.out_valid.eq(bottom_valid)]

        # Hazard monitor. A write presented in cycle w reaches PE (i, j) in cycle c = w + j; an
        # element reading column p of row i now was presented in c - i - p. It should see the old
        # weights iff it was presented by w (p >= j - i) and it reads them too late iff it still
        # has column j to reach (p < j).
        hits = []
        for i in range(d):
            for j in range(d):
                older = [pv & (pb == wcol[j].bank) for pv, pb, p in pending[i] if j - i <= p < j]
                if older:
                    hits.append(written[i][j] & Cat(*older).any())
        m.d.comb += self.w_conflict.eq(Cat(*hits).any())
        return m
