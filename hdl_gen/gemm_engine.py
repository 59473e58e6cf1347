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

    For every batch item, n-tile ``nt`` and k-tile ``kt`` (innermost) the sequencer reads the
    ``dim`` rows of B tile ``(kt, nt)`` into the idle weight bank of the array (one broadcast row
    write per scratchpad read; with ``b_transpose`` each scratchpad row is a B column and is
    written into a column of PEs), then streams the ``m`` A rows of k-tile ``kt`` through the array
    with the bank bit of that tile, one scratchpad read per cycle. Tiles alternate weight banks, so
    the next tile's weights load while the current tile's rows are still in the array; only one
    scratchpad read port exists, so a tile takes ``dim + m`` read cycles (A-row utilization
    ``m / (m + dim)``). Result row ``i`` goes to accumulator row ``c_addr + nt*c_nt_stride + i``:
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
    hazard-free whatever the SRAM's read-during-write behaviour. (With today's issue order a C row recurs at least ``dim + 1``
    cycles later, e.g. the next k-tile with ``m = 1``, so the forward is a safeguard that does not
    fire.) ``done`` pulses
    the cycle after the last accumulator write, with ``busy`` already low, so the next command can
    be accepted in the ``done`` cycle. In steady state one A row (one MAC per PE) enters per cycle.

    Weight-bank hazards. A B-row write into bank ``b`` must not reach a PE row that an in-flight A
    row of bank ``b`` (the tile before last) still has to pass. A per-bank down-counter is loaded with
    ``2*dim-2`` whenever an A row of that bank enters the array; B row ``kk`` is issued only when
    ``counter[b] + kk <= dim + 1`` and no row of bank ``b`` enters in the same cycle (row ``kk`` of an
    entering row is last read ``kk + dim - 1`` cycles later). The check is made a cycle ahead and
    registered, with ``kk`` bounded by one more than the row index then (so no path runs from the
    counters into the scratchpad's address multiplexer); after a cycle without a B read the bound
    is one too high and a B row can wait one cycle longer than needed. With the one-port issue order (all
    ``dim`` B reads of tile ``t+1`` and at least one A read of it lie between tile ``t-1``'s last
    A row and tile ``t+1``'s B rows) that condition always holds, so it never stalls today; it keeps
    the array safe if the issue order changes. ``array.w_conflict`` independently flags a violation.

    Memory ports. In the SoC this engine has priority 0 on all three ports, so it assumes ``gnt``
    is always 1 on ``acc_rd`` and ``acc_wr`` (they are not retried). A denied scratchpad read is
    handled: the row is simply re-requested next cycle and a bubble enters the array.

    Ports
    -----
    ctl     : Out(EngineSignature(GemmCmd)) — in: ``cmd.valid`` (1), ``cmd.payload`` (GemmCmd, 176
              bits); out: ``cmd.ready`` (1, = idle), ``done`` (1), ``error`` (ErrorCode, 8), ``busy`` (1).
    spad_rd : Out(ReadPortSignature(spad_addr_bits, dim*8)) — A and B rows (out: ``addr``, ``en``;
              in: ``gnt``, ``data``).
    acc_rd  : Out(ReadPortSignature(acc_addr_bits, dim*32)) — old C rows for accumulation.
    acc_wr  : Out(WritePortSignature(acc_addr_bits, dim*32)) — C rows (out: ``addr``, ``en``,
              ``data``; in: ``gnt``, ignored).
    active  : Out(1) — a (non-bubble) A row enters the array this cycle (MAC cycles).
    stall   : Out(1) — busy and no A row entered this cycle (checks, weight loads, denied reads,
              drain).

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

        # ---- loop state --------------------------------------------------------------------------
        batch = Signal(8)
        nt = Signal(12)
        kt = Signal(12)
        idx = Signal(16)          # B row kk while loading weights, else A row i
        load_b = Signal()
        bank = Signal()           # weight bank of the current tile
        a_bbase = Signal(sa)      # a_addr + batch*a_batch_stride
        a_base = Signal(sa)       # a_bbase + kt*a_kt_stride
        a_ptr = Signal(sa)
        b_bbase = Signal(sa)      # b_addr + batch*b_batch_stride
        b_nbase = Signal(sa)      # b_bbase + nt*b_n_step
        b_tbase = Signal(sa)      # b_nbase + kt*b_k_step: the tile's first row
        b_ptr = Signal(sa)        # b_tbase + kk
        c_bbase = Signal(ca)      # c_addr + batch*c_batch_stride
        c_base = Signal(ca)       # c_bbase + nt*c_nt_stride
        c_ptr = Signal(ca)
        b_k_step = Mux(cmd.b_transpose, cmd.b_nt_stride, d)
        b_n_step = Mux(cmd.b_transpose, d, cmd.b_nt_stride)
        bm1 = cmd.batches_m1

        # ---- stage 1: scratchpad data arrives and enters the array --------------------------------
        # A row's metadata waits mem_read_latency cycles for its data (registers q1, q2, ...);
        # the array takes it from the last. The hazard tracker counts from q1 (a row fired last
        # cycle): a fixed shift from the array entry, so its arithmetic is the same.
        row_meta = data.StructLayout({"valid": 1, "is_a": 1, "row": kb, "bank": 1, "caddr": ca,
                                      "accum": 1, "last": 1})
        meta_q = [Signal(row_meta, name=f"spad_meta_q{k}") for k in range(1, lat_mem + 1)]
        q1, s1 = meta_q[0], meta_q[-1]
        s1_valid, s1_is_a, s1_row, s1_bank = s1.valid, s1.is_a, s1.row, s1.bank
        s1_caddr, s1_accum, s1_last = s1.caddr, s1.accum, s1.last
        a_enter = s1_valid & s1_is_a
        a_fired = q1.valid & q1.is_a

        # ---- stage 0: scratchpad read issue ---------------------------------------------------------
        issuing = Signal()

        # Weight-bank hazard tracking (see class docstring). The check is registered: in each
        # cycle, per bank, whether a B row issued into it in the next cycle is safe, from the
        # counter's next value, an A row of that bank issued now (it enters next cycle) and an
        # upper bound of the next B row index (idx + 1 while loading, 0 when loading starts).
        # The bound only exceeds the real index after a cycle without a B read, so the
        # registered check can hold a B row one cycle longer than the exact one, never shorter.
        bank_cnt = [Signal(range(2 * d - 1), name=f"bank{b}_busy_cnt") for b in range(2)]
        b_ok = Signal(2, name="bank_b_ok")
        kk_next = Mux(load_b, idx[:kb] + 1, 0)
        for b in range(2):
            cnt_next = Mux(a_fired & (q1.bank == b), 2 * d - 2,
                           Mux(bank_cnt[b] != 0, bank_cnt[b] - 1, 0))
            m.d.sync += [
                bank_cnt[b].eq(cnt_next),
                b_ok[b].eq(~(issuing & ~load_b & (bank == b)) & (cnt_next + kk_next <= d + 1)),
            ]
        b_safe = b_ok.bit_select(bank, 1)

        spad_rd = self.spad_rd
        m.d.comb += [
            spad_rd.en.eq(issuing & (~load_b | b_safe)),
            spad_rd.addr.eq(Mux(load_b, b_ptr, a_ptr)),
        ]
        fire = spad_rd.en & spad_rd.gnt
        m.d.sync += [q1.valid.eq(fire), q1.is_a.eq(~load_b), q1.row.eq(idx[:kb]), q1.bank.eq(bank),
                     q1.caddr.eq(c_ptr), q1.accum.eq(cmd.accumulate | (kt != 0)),
                     q1.last.eq((batch == bm1) & (nt == nt_m1) & (kt == kt_m1) & (idx == m_m1))]
        m.d.sync += [meta_q[k].eq(meta_q[k - 1]) for k in range(1, lat_mem)]
        m.d.comb += [
            arr.a_data.eq(spad_rd.data),
            arr.a_valid.eq(a_enter),
            arr.a_bank.eq(s1_bank),
            arr.w_en.eq(s1_valid & ~s1_is_a),
            arr.w_row.eq(s1_row),
            arr.w_transpose.eq(cmd.b_transpose),
            arr.w_bank.eq(s1_bank),
            arr.w_data.eq(spad_rd.data),
            self.active.eq(a_enter),
            self.stall.eq(busy & ~a_enter),
        ]

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
                        batch.eq(0), nt.eq(0), kt.eq(0), idx.eq(0), load_b.eq(1),
                        a_bbase.eq(cmd.a_addr), a_base.eq(cmd.a_addr), a_ptr.eq(cmd.a_addr),
                        b_bbase.eq(cmd.b_addr), b_nbase.eq(cmd.b_addr), b_tbase.eq(cmd.b_addr),
                        b_ptr.eq(cmd.b_addr),
                        c_bbase.eq(cmd.c_addr), c_base.eq(cmd.c_addr), c_ptr.eq(cmd.c_addr),
                    ]
                    m.next = "RUN"

            with m.State("RUN"):
                m.d.comb += issuing.eq(1)
                with m.If(fire & load_b):
                    m.d.sync += [b_ptr.eq(b_ptr + 1), idx.eq(idx + 1)]
                    with m.If(idx[:kb] == d - 1):
                        m.d.sync += [load_b.eq(0), idx.eq(0)]
                with m.If(fire & ~load_b):
                    m.d.sync += [a_ptr.eq(a_ptr + 1), c_ptr.eq(c_ptr + 1), idx.eq(idx + 1)]
                    with m.If(idx == m_m1):
                        # Tile done: the next one loads its weights into the other bank.
                        m.d.sync += [load_b.eq(1), idx.eq(0), bank.eq(~bank)]
                        with m.If(kt != kt_m1):
                            m.d.sync += [
                                kt.eq(kt + 1),
                                a_base.eq(a_base + cmd.a_kt_stride),
                                a_ptr.eq(a_base + cmd.a_kt_stride),
                                b_tbase.eq(b_tbase + b_k_step),
                                b_ptr.eq(b_tbase + b_k_step),
                                c_ptr.eq(c_base),
                            ]
                        with m.Elif(nt != nt_m1):
                            m.d.sync += [
                                nt.eq(nt + 1), kt.eq(0),
                                a_base.eq(a_bbase), a_ptr.eq(a_bbase),
                                b_nbase.eq(b_nbase + b_n_step),
                                b_tbase.eq(b_nbase + b_n_step),
                                b_ptr.eq(b_nbase + b_n_step),
                                c_base.eq(c_base + cmd.c_nt_stride),
                                c_ptr.eq(c_base + cmd.c_nt_stride),
                            ]
                        with m.Elif(batch != bm1):
                            a_next = a_bbase + cmd.a_batch_stride
                            b_next = b_bbase + cmd.b_batch_stride
                            c_next = c_bbase + cmd.c_batch_stride
                            m.d.sync += [
                                batch.eq(batch + 1), nt.eq(0), kt.eq(0),
                                a_bbase.eq(a_next), a_base.eq(a_next), a_ptr.eq(a_next),
                                b_bbase.eq(b_next), b_nbase.eq(b_next), b_tbase.eq(b_next),
                                b_ptr.eq(b_next),
                                c_bbase.eq(c_next), c_base.eq(c_next), c_ptr.eq(c_next),
                            ]
                        with m.Else():
                            m.next = "DRAIN"

            with m.State("DRAIN"):
                # Wait for the last row's accumulator write; done follows it by one cycle.
                with m.If(arr.out_valid & out_last):
                    m.d.sync += [done.eq(1), error.eq(ErrorCode.OK)]
                    m.next = "IDLE"

        m.d.comb += busy.eq(~fsm.ongoing("IDLE"))
        return m
