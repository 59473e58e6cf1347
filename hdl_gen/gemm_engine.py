"""GEMM sequencer: streams tiles from the scratchpad through the PE array into the accumulator."""
from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import Out

from .config import KakiConfig
from .descriptor import ErrorCode, GemmCmd
from .engine import EngineSignature
from .mem_port import ReadPortSignature, WritePortSignature
from .pe_array import PEArray


class GemmEngine(wiring.Component):
    """Executes :class:`~hdl_gen.descriptor.GemmCmd` commands on a :class:`PEArray`.

    For every batch item, n-tile ``nt`` and k-tile ``kt`` (innermost) two streams run side by
    side, each on its own scratchpad read port. The B stream reads the ``dim`` rows of B tile
    ``(kt, nt)`` on ``spad_rd_b`` into a weight bank of the array (one row write per read; with
    ``b_transpose`` each scratchpad row is a B column and is written into a column of PEs); the A
    stream reads the ``m`` A rows of k-tile ``kt`` on ``spad_rd``, one a cycle, through the array
    with the bank bit of that tile. Tiles alternate the two weight banks: the B stream reads tile
    ``t+1`` while the A stream streams tile ``t``, so a tile takes ``max(m, dim)`` cycles in steady
    state (``m`` A rows, or ``dim`` B rows), ``(m + 2*dim - 2) / 2`` at least with a transposed
    B. An A row of a tile is read only after all its B rows (the cycle after the last); a B row
    only while at most one loaded tile waits for (or is in) the A stream. When A and B lie in the
    same scratchpad bank the two ports take turns (the A port has priority), about ``m + dim``
    cycles a tile. Result row ``i`` goes to accumulator row ``c_addr + nt*c_nt_stride + i``:
    written when ``kt == 0`` and ``accumulate == 0``, else read-modify-write added (wrapping int32).

    Validation, before any memory access, in this priority: a nonzero ``reserved`` field →
    ``RESERVED_BITS``; ``m``, ``k_tiles`` or ``n_tiles`` zero → ``BAD_SHAPE``; any A, B or C row the
    command would touch at or beyond ``config.spad_rows`` / ``config.acc_rows`` (computed at full
    width, so large 20-bit addresses and strides cannot wrap into range) → ``LOCAL_RANGE``. A failing
    command retires with ``done`` and the code and touches no memory.

    Timing. A command is accepted only when idle (``ctl.cmd.ready`` = not busy). Accept → 2 check
    cycles → the first scratchpad read. A scratchpad row read granted in cycle ``c`` enters the
    array in ``c + mem_read_latency``; its result leaves the array ``L = 2*dim-1`` cycles later
    and is written to the accumulator in that same cycle (an accumulating row's old value is read
    ``mem_read_latency + 1`` cycles earlier from the address carried down a delay line next to
    the array, and registered: the adder sits between registers, not between block RAMs). Rows
    are written in issue order; a write to the same row between its read and its write that the
    memory's read does not see is forwarded, so even back-to-back RMW of one row would be
    hazard-free whatever the SRAM's read-during-write behaviour. (With today's issue order a C
    row recurs at least ``dim`` cycles later, e.g. the next k-tile with ``m = 1``, so the
    forward is a safeguard that does not fire.) ``done`` pulses
    the cycle after the last accumulator write, with ``busy`` already low, so the next command can
    be accepted in the ``done`` cycle. In steady state one A row (one MAC per PE) enters per cycle.

    Weight-bank hazards. The array's row writes follow an A row's skew (``PEArray``): B row
    ``kk`` may go into bank ``b`` once the last A row of bank ``b`` (of the tile before last) was
    read ``kk`` cycles earlier or more (a column, ``dim - 1``); a saturating counter per bank
    counts the cycles since that read. The comparison is registered (for the three rows the
    next cycle can hold), so no path runs from the counters into the scratchpad's address
    multiplexer. In steady state the condition already holds when the B stream reaches the
    bank with a row-major B; it costs cycles only with a transposed B and ``m`` near ``dim``.
    ``array.w_conflict`` independently flags a violation.

    Memory ports. In the SoC this engine has priority 0 on the accumulator ports and 0 and 1 on
    the scratchpad's, so it assumes ``gnt`` is always 1 on ``acc_rd`` and ``acc_wr`` (they are
    not retried). A denied scratchpad read is handled on either port: the row is simply
    re-requested next cycle (a bubble enters the array, or the weight load waits).

    Ports
    -----
    ctl     : Out(EngineSignature(GemmCmd)) — in: ``cmd.valid`` (1), ``cmd.payload`` (GemmCmd, 176
              bits); out: ``cmd.ready`` (1, = idle), ``done`` (1), ``error`` (ErrorCode, 8), ``busy`` (1).
    spad_rd : Out(ReadPortSignature(spad_addr_bits, dim*8)) — A rows (out: ``addr``, ``en``;
              in: ``gnt``, ``data``).
    spad_rd_b : Out(ReadPortSignature(spad_addr_bits, dim*8)) — B rows (the weights).
    acc_rd  : Out(ReadPortSignature(acc_addr_bits, dim*32)) — old C rows for accumulation.
    acc_wr  : Out(WritePortSignature(acc_addr_bits, dim*32)) — C rows (out: ``addr``, ``en``,
              ``data``; in: ``gnt``, ignored).
    active  : Out(1) — a (non-bubble) A row enters the array this cycle (MAC cycles).
    stall   : Out(1) — busy and no A row entered this cycle (checks, the first weight load, waits
              for weights, denied reads, drain).

    ``array`` (the :class:`PEArray` submodule) is an attribute so test harnesses can observe
    ``array.w_conflict``.
    """

    def __init__(self, config):
        if not isinstance(config, KakiConfig):
            raise ValueError(f"GemmEngine needs a KakiConfig, not {config!r}")
        self.config = config
        self.array = PEArray(config.dim)
        super().__init__({
            "ctl": Out(EngineSignature(GemmCmd)),
            "spad_rd": Out(ReadPortSignature(config.spad_addr_bits, config.dim * 8)),
            "spad_rd_b": Out(ReadPortSignature(config.spad_addr_bits, config.dim * 8)),
            "acc_rd": Out(ReadPortSignature(config.acc_addr_bits, config.dim * 32)),
            "acc_wr": Out(WritePortSignature(config.acc_addr_bits, config.dim * 32)),
            "active": Out(1),
            "stall": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        d = cfg.dim
        kb = (d - 1).bit_length()
        sa, ca = cfg.spad_addr_bits, cfg.acc_addr_bits
        m.submodules.array = arr = self.array
        lat = arr.latency
        lat_mem = cfg.mem_read_latency

        # ---- command latch and validation ------------------------------------------------------
        cmd = Signal(GemmCmd)
        kt_m1 = (cmd.k_tiles - 1)[:12]
        nt_m1 = (cmd.n_tiles - 1)[:12]
        m_m1 = (cmd.m - 1)[:16]
        # The strides' products are formed as the command is taken (from the dispatcher's
        # register) and registered, so CHECK has only the sums and compares.
        new = self.ctl.cmd.payload
        new_kt_m1, new_nt_m1 = (new.k_tiles - 1)[:12], (new.n_tiles - 1)[:12]
        a_span = Signal(12 + len(new.a_kt_stride), name="a_span")     # kt_m1 * a_kt_stride
        # B's tiles step by b_nt_stride along n, or along k when B is stored transposed; the
        # other direction steps by dim rows.
        b_span = Signal(12 + len(new.b_nt_stride), name="b_span")
        c_span = Signal(12 + len(new.c_nt_stride), name="c_span")     # nt_m1 * c_nt_stride
        batch_spans = {x: Signal(8 + 16, name=f"{x}_batch_span") for x in "abc"}
        # Last row touched in each region, at full width (only meaningful when the shape is valid).
        b_lin_m1 = Mux(cmd.b_transpose, nt_m1, kt_m1)
        a_last = cmd.a_addr + a_span + batch_spans["a"] + m_m1
        b_last = cmd.b_addr + b_span + batch_spans["b"] + b_lin_m1 * d + (d - 1)
        c_last = cmd.c_addr + c_span + batch_spans["c"] + m_m1
        err_reserved = Signal()
        err_shape = Signal()
        err_range = Signal()

        done = Signal()
        error = Signal(ErrorCode)
        busy = Signal()
        m.d.sync += done.eq(0)
        m.d.comb += [self.ctl.done.eq(done), self.ctl.error.eq(error), self.ctl.busy.eq(busy)]

        # ---- the two streams: B rows into the weight banks, A rows through the array -----------
        # Each walks the tiles in the same order (batch, n-tile, k-tile innermost). ``loaded``
        # counts the tiles whose B rows have all been read and whose A rows have not: with two
        # weight banks, B may read while it is at most 1 (the tile it reads goes into the bank
        # the A stream left), A while it is at least 1.
        loaded = Signal(range(3))
        b_run, a_run = Signal(), Signal()
        kk = Signal(kb)           # B row of the tile being read
        b_bank = Signal()
        b_walk = _TileWalk(m, "b")
        b_bbase = Signal(sa)      # b_addr + batch*b_batch_stride
        b_nbase = Signal(sa)      # b_bbase + nt*b_n_step
        b_tbase = Signal(sa)      # b_nbase + kt*b_k_step: the tile's first row
        b_ptr = Signal(sa)        # b_tbase + kk
        idx = Signal(16)          # A row of the tile being streamed
        a_bank = Signal()
        a_walk = _TileWalk(m, "a")
        a_bbase = Signal(sa)      # a_addr + batch*a_batch_stride
        a_base = Signal(sa)       # a_bbase + kt*a_kt_stride
        a_ptr = Signal(sa)
        c_bbase = Signal(ca)      # c_addr + batch*c_batch_stride
        c_base = Signal(ca)       # c_bbase + nt*c_nt_stride
        c_ptr = Signal(ca)
        b_k_step = Mux(cmd.b_transpose, cmd.b_nt_stride, d)
        b_n_step = Mux(cmd.b_transpose, d, cmd.b_nt_stride)
        bm1 = cmd.batches_m1
        limits = (kt_m1, nt_m1, bm1)

        # ---- stage 1: scratchpad data arrives and enters the array --------------------------------
        # A row's metadata waits mem_read_latency cycles for its data (registers q1, q2, ...),
        # and so does a B row's; the array takes them from the last.
        a_meta = data.StructLayout({"valid": 1, "bank": 1, "caddr": ca, "accum": 1, "last": 1})
        b_meta = data.StructLayout({"valid": 1, "row": kb, "bank": 1})
        a_q = [Signal(a_meta, name=f"a_meta_q{k}") for k in range(1, lat_mem + 1)]
        b_q = [Signal(b_meta, name=f"b_meta_q{k}") for k in range(1, lat_mem + 1)]
        s1 = a_q[-1]
        s1_caddr, s1_accum, s1_last = s1.caddr, s1.accum, s1.last
        a_enter = s1.valid

        # ---- stage 0: scratchpad read issue ---------------------------------------------------------
        running = Signal()
        a_rd, b_rd = self.spad_rd, self.spad_rd_b
        a_fire = a_rd.en & a_rd.gnt
        b_fire = b_rd.en & b_rd.gnt
        b_tile_end = b_fire & (kk == d - 1)
        a_tile_end = a_fire & (idx == m_m1)
        a_last_row = a_walk.at_end(limits) & (idx == m_m1)     # of the command

        # Weight-bank hazard (see class docstring): B row kk may go into bank b once the last A
        # row of bank b was read at least kk cycles before (a B column: dim - 1), the skewed
        # write then following that row through the array. ``since[b]``: cycles since that
        # read, saturating. The comparison is registered, for the three rows the next cycle can
        # hold (this row again, the next one, row 0 of a new tile), so no path runs from the
        # counters into the scratchpad's address multiplexer.
        since = [Signal(range(d), init=d - 1, name=f"bank{b}_since_a") for b in range(2)]
        ok = {key: Signal(2, name=f"bank_b_ok_{key}") for key in ("same", "next", "first")}
        b_stepped, b_wrapped = Signal(), Signal()
        for b in range(2):
            since_next = Mux(a_fire & (a_bank == b), 1,
                             Mux(since[b] == d - 1, d - 1, since[b] + 1))
            need = {"same": kk, "next": kk + 1, "first": 0}
            m.d.sync += since[b].eq(since_next)
            m.d.sync += [ok[key][b].eq(since_next >= Mux(cmd.b_transpose, d - 1, row))
                         for key, row in need.items()]
        m.d.sync += [b_stepped.eq(b_fire), b_wrapped.eq(b_tile_end)]
        b_safe = Mux(b_wrapped, ok["first"], Mux(b_stepped, ok["next"], ok["same"])).bit_select(
            b_bank, 1)

        m.d.comb += [
            b_rd.en.eq(running & b_run & (loaded != 2) & b_safe),
            b_rd.addr.eq(b_ptr),
            a_rd.en.eq(running & a_run & (loaded != 0)),
            a_rd.addr.eq(a_ptr),
        ]
        m.d.sync += loaded.eq(loaded + b_tile_end - a_tile_end)
        m.d.sync += [a_q[0].valid.eq(a_fire), a_q[0].bank.eq(a_bank), a_q[0].caddr.eq(c_ptr),
                     a_q[0].accum.eq(cmd.accumulate | (a_walk.kt != 0)),
                     a_q[0].last.eq(a_last_row),
                     b_q[0].valid.eq(b_fire), b_q[0].row.eq(kk), b_q[0].bank.eq(b_bank)]
        m.d.sync += [q[k].eq(q[k - 1]) for q in (a_q, b_q) for k in range(1, lat_mem)]
        m.d.comb += [
            arr.a_data.eq(a_rd.data),
            arr.a_valid.eq(a_enter),
            arr.a_bank.eq(s1.bank),
            arr.w_en.eq(b_q[-1].valid),
            arr.w_row.eq(b_q[-1].row),
            arr.w_transpose.eq(cmd.b_transpose),
            arr.w_bank.eq(b_q[-1].bank),
            arr.w_data.eq(b_rd.data),
            self.active.eq(a_enter),
            self.stall.eq(busy & ~a_enter),
        ]

        # ---- the streams' pointers -----------------------------------------------------------------
        def b_start(base):
            return [b_nbase.eq(base), b_tbase.eq(base), b_ptr.eq(base)]

        def a_start(a, c):
            return [a_base.eq(a), a_ptr.eq(a), c_base.eq(c), c_ptr.eq(c)]

        with m.If(b_fire):
            m.d.sync += [b_ptr.eq(b_ptr + 1), kk.eq(kk + 1)]
            with m.If(kk == d - 1):
                m.d.sync += b_bank.eq(~b_bank)
                b_walk.step(limits, kt=[b_tbase.eq(b_tbase + b_k_step),
                                        b_ptr.eq(b_tbase + b_k_step)],
                            nt=b_start(b_nbase + b_n_step),
                            batch=[b_bbase.eq(b_bbase + cmd.b_batch_stride),
                                   *b_start(b_bbase + cmd.b_batch_stride)],
                            end=[b_run.eq(0)])
        with m.If(a_fire):
            m.d.sync += [a_ptr.eq(a_ptr + 1), c_ptr.eq(c_ptr + 1), idx.eq(idx + 1)]
            with m.If(idx == m_m1):
                m.d.sync += [idx.eq(0), a_bank.eq(~a_bank)]
                a_walk.step(limits, kt=[a_base.eq(a_base + cmd.a_kt_stride),
                                        a_ptr.eq(a_base + cmd.a_kt_stride), c_ptr.eq(c_base)],
                            nt=a_start(a_bbase, c_base + cmd.c_nt_stride),
                            batch=[a_bbase.eq(a_bbase + cmd.a_batch_stride),
                                   c_bbase.eq(c_bbase + cmd.c_batch_stride),
                                   *a_start(a_bbase + cmd.a_batch_stride,
                                            c_bbase + cmd.c_batch_stride)],
                            end=[a_run.eq(0)])

        # ---- accumulator side: row metadata travels next to the array --------------------------
        meta = Cat(a_enter, s1_caddr, s1_accum, s1_last)
        stages = [meta]
        for k in range(1, lat + 1):
            q = Signal(len(meta), name=f"meta{k}")
            m.d.sync += q.eq(stages[-1])
            stages.append(q)
        # An accumulating row's old value is read mem_read_latency + 1 cycles before its sum is
        # written and held in a register, so no path runs from a block RAM's output through the
        # adder into a block RAM's input. The memory's read sees the writes granted up to its
        # cycle (one before it with latency 1); later ones, up to the register, are forwarded:
        # a write to the row in the register's cycle directly, earlier ones through a chain of
        # registers that follows the row from its read to the register (the newest write wins).
        rd, pre, out = stages[lat - 1 - lat_mem], stages[lat - 1], stages[lat]
        rd_valid, rd_addr, rd_accum = rd[0], rd[1:1 + ca], rd[1 + ca]
        pre_addr = pre[1:1 + ca]
        out_addr, out_accum, out_last = out[1:1 + ca], out[1 + ca], out[2 + ca]

        m.d.comb += [
            self.acc_rd.en.eq(rd_valid & rd_accum),
            self.acc_rd.addr.eq(rd_addr),
        ]
        fwd_hit, fwd_data = Const(0), self.acc_wr.data
        for k in range(lat_mem - 1, 0, -1):       # the row k cycles before the register
            addr = stages[lat - 1 - k][1:1 + ca]
            hit = Signal(name=f"fwd{k}_hit")
            data_k = Signal(d * 32, name=f"fwd{k}_data", reset_less=True)
            wr_hit = self.acc_wr.en & (self.acc_wr.addr == addr)
            m.d.sync += [hit.eq(wr_hit | fwd_hit),
                         data_k.eq(Mux(wr_hit, self.acc_wr.data, fwd_data))]
            fwd_hit, fwd_data = hit, data_k
        old = Signal(d * 32, reset_less=True)
        m.d.sync += old.eq(Mux(self.acc_wr.en & (self.acc_wr.addr == pre_addr), self.acc_wr.data,
                               Mux(fwd_hit, fwd_data, self.acc_rd.data)))
        total = Cat(*[(old[32 * n:32 * n + 32] + arr.out_data[32 * n:32 * n + 32])[:32]
                      for n in range(d)])
        m.d.comb += [
            self.acc_wr.en.eq(arr.out_valid),
            self.acc_wr.addr.eq(out_addr),
            self.acc_wr.data.eq(Mux(out_accum, total, arr.out_data)),
        ]

        # ---- control ---------------------------------------------------------------------------
        with m.FSM(init="IDLE", name="gemm_fsm") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.ctl.cmd.ready.eq(1)
                with m.If(self.ctl.cmd.valid):
                    m.d.sync += [cmd.eq(self.ctl.cmd.payload),
                                 a_span.eq(new_kt_m1 * new.a_kt_stride),
                                 b_span.eq(Mux(new.b_transpose, new_kt_m1, new_nt_m1)
                                           * new.b_nt_stride),
                                 c_span.eq(new_nt_m1 * new.c_nt_stride)]
                    m.d.sync += [batch_spans[x].eq(new.batches_m1 * new[f"{x}_batch_stride"])
                                 for x in "abc"]
                    m.next = "CHECK"

            with m.State("CHECK"):
                m.d.sync += [
                    err_reserved.eq(cmd.reserved != 0),
                    err_shape.eq((cmd.m == 0) | (cmd.k_tiles == 0) | (cmd.n_tiles == 0)),
                    err_range.eq((a_last >= cfg.spad_rows) | (b_last >= cfg.spad_rows)
                                 | (c_last >= cfg.acc_rows)),
                ]
                m.next = "DECIDE"

            with m.State("DECIDE"):
                with m.If(err_reserved | err_shape | err_range):
                    m.d.sync += done.eq(1)
                    with m.If(err_reserved):
                        m.d.sync += error.eq(ErrorCode.RESERVED_BITS)
                    with m.Elif(err_shape):
                        m.d.sync += error.eq(ErrorCode.BAD_SHAPE)
                    with m.Else():
                        m.d.sync += error.eq(ErrorCode.LOCAL_RANGE)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [
                        loaded.eq(0), b_run.eq(1), a_run.eq(1), kk.eq(0), idx.eq(0),
                        b_bank.eq(0), a_bank.eq(0), *b_walk.reset(), *a_walk.reset(),
                        b_bbase.eq(cmd.b_addr), *b_start(cmd.b_addr),
                        a_bbase.eq(cmd.a_addr), c_bbase.eq(cmd.c_addr),
                        *a_start(cmd.a_addr, cmd.c_addr),
                    ]
                    m.next = "RUN"

            with m.State("RUN"):
                m.d.comb += running.eq(1)
                with m.If(a_fire & a_last_row):
                    m.next = "DRAIN"

            with m.State("DRAIN"):
                # Wait for the last row's accumulator write; done follows it by one cycle.
                with m.If(arr.out_valid & out_last):
                    m.d.sync += [done.eq(1), error.eq(ErrorCode.OK)]
                    m.next = "IDLE"

        m.d.comb += busy.eq(~fsm.ongoing("IDLE"))
        return m


class _TileWalk:
    """A stream's tile counters (batch item, n-tile, k-tile innermost) and the statements that
    advance them past the stream's last row of a tile."""

    def __init__(self, m, name):
        self.m = m
        self.batch = Signal(8, name=f"{name}_batch")
        self.nt = Signal(12, name=f"{name}_nt")
        self.kt = Signal(12, name=f"{name}_kt")

    def reset(self):
        return [self.batch.eq(0), self.nt.eq(0), self.kt.eq(0)]

    def at_end(self, limits):
        kt_m1, nt_m1, bm1 = limits
        return (self.kt == kt_m1) & (self.nt == nt_m1) & (self.batch == bm1)

    def step(self, limits, *, kt, nt, batch, end):
        """Next k-tile, else the next n-tile, else the next batch item, else ``end``; each with
        the stream's pointer updates."""
        kt_m1, nt_m1, bm1 = limits
        m = self.m
        with m.If(self.kt != kt_m1):
            m.d.sync += [self.kt.eq(self.kt + 1), *kt]
        with m.Elif(self.nt != nt_m1):
            m.d.sync += [self.nt.eq(self.nt + 1), self.kt.eq(0), *nt]
        with m.Elif(self.batch != bm1):
            m.d.sync += [self.batch.eq(self.batch + 1), self.nt.eq(0), self.kt.eq(0), *batch]
        with m.Else():
            m.d.sync += end
