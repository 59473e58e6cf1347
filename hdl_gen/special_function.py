"""Special-function unit (SFU): softmax (with a causal mask), LayerNorm, RMSNorm, table lookup
(GELU, SiLU) and the elementwise multiply, on int8 scratchpad rows of any length, exactly as
docs/numerics.md "Special functions" specifies (constants: :mod:`hdl_gen.sfu_numerics`).
"""
from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, enum, fifo, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from . import sfu_numerics as N
from .config import KakiConfig
from .descriptor import PAYLOAD_BITS, EmulCmd, ErrorCode, LutCmd, NormCmd, SoftmaxCmd
from .engine import EngineSignature
from .mem_port import ReadPortSignature, WritePortSignature


class SfuOp(enum.Enum, shape=3):
    """What an SFU command does (the SoC maps each opcode to one)."""
    SOFTMAX = 0
    LAYERNORM = 1
    RMSNORM = 2
    LUT = 3
    EMUL = 4


#: The SFU operation of each command-table row the SFU serves (by command name).
SFU_OPCODES = {"SOFTMAX": SfuOp.SOFTMAX, "LAYERNORM": SfuOp.LAYERNORM, "RMSNORM": SfuOp.RMSNORM,
               "LUT": SfuOp.LUT, "EMUL": SfuOp.EMUL}


class SfuCommand(data.Struct):
    """The SFU's command: the operation and the descriptor payload (its layout per ``op``:
    SoftmaxCmd, NormCmd, LutCmd, EmulCmd)."""
    op: SfuOp
    payload: PAYLOAD_BITS


class Pass(enum.Enum, shape=3):
    """A sweep over the segments of a row (or, TABLE, over the lookup table's rows)."""
    TABLE = 0     #: read the lookup table into every lane's copy
    MAX = 1       #: softmax: the row max
    SUM = 2       #: softmax: the sum of the exponentials
    STATS = 3     #: norms: sum and sum of squares
    OUT = 4       #: compute and write the result


#: Pipeline stages from a segment's last operand to its write into the output FIFO.
STAGES = 6
#: Output FIFO entries (rows waiting for a scratchpad write grant).
OUT_DEPTH = 16
#: Radicand bits of the square root (``D * 2^32 + eps_mant * 2^63`` at most) and root bits.
SQRT_IN_BITS, SQRT_OUT_BITS = 80, 40
#: Numerator bits of the divider (``2^(b+23)`` with ``b <= 40``, or ``127 * 2^34``).
DIV_NUM_BITS = 64
#: Cycles of a row's square root (the radicand, one root bit a cycle, the divider's set-up) and
#: of its division (one quotient bit a cycle, the result, the next pass's set-up).
SQRT_CYCLES = SQRT_OUT_BITS + 2
DIV_CYCLES = DIV_NUM_BITS + 2


def _exp2_rom(j):
    """``(T[j], T[j] - T[j+1])`` for a 6-bit ``j`` (constant ROMs)."""
    t = N.EXP2_TABLE
    return (Array(Const(v, 16) for v in t[:-1])[j],
            Array(Const(t[i] - t[i + 1], 9) for i in range(len(t) - 1))[j])


def _round_shift(p, s):
    """``p`` for ``s == 0`` else ``floor((p + 2^(s-1)) / 2^s)`` (``p`` signed, ``s`` a value):
    the floor shift plus the bit below the kept ones (docs/numerics.md, as the vector unit)."""
    return Mux(s == 0, p, (p >> s) + (p >> (s - 1)[:len(s)])[0])


def _clamp_i8(v):
    return Mux(v > 127, 127, Mux(v < -128, -128, v))[:8]


class SpecialFunctionUnit(wiring.Component):
    """Executes SFU commands (:class:`SfuCommand`) on ``dim`` lanes.

    Ports
    -----
    ctl : Out(EngineSignature(SfuCommand)) — command link: ``ctl.cmd`` accepted only when idle;
        ``ctl.done`` pulses once per command (after its last scratchpad write, or after the
        error is found), ``ctl.error`` valid with it; ``ctl.busy`` from acceptance to ``done``.
    spad_rd : Out(ReadPortSignature(spad_addr_bits, dim*8)) — the input rows (and a lookup
        table's rows, an EMUL's second operand). May be denied: the unit retries.
    acc_rd : Out(ReadPortSignature(acc_addr_bits, dim*32)) — gamma and beta rows (norms). May
        be denied: the unit retries.
    spad_wr : Out(WritePortSignature(spad_addr_bits, dim*8)) — result rows, from an output
        FIFO; may be denied (the row waits). Reads that produce writes are issued only while the
        FIFO has room for every row in flight, so nothing is dropped and nothing stalls.
    active : Out(1) — a segment entered the compute pipeline this cycle.

    Operation
    ---------
    1. Validate (three cycles, nothing read before): reserved bits → ``RESERVED_BITS``;
       ``rows`` or ``length`` 0, or a norm's ``length`` above 4096 → ``BAD_SHAPE``; a row of any
       operand past its memory (source, destination, EMUL's second operand, the LUT table, gamma
       and beta) → ``LOCAL_RANGE``.
    2. LUT: read the table's ``256/dim`` rows into every lane's copy.
    3. Per logical row, its passes over the ``ceil(length/dim)`` segments, one read a cycle
       (a segment of an LN output pass reads three rows: x, gamma, beta): softmax MAX, SUM, a
       division, OUT; norms STATS, the square root and the division, OUT; LUT and EMUL only OUT.
       A pass starts when the previous one's segments have left the pipeline.
    4. ``done`` once the last row is written.

    The destination may equal the source (in place): a row is written only in its OUT pass,
    after every read of that row's earlier passes; its segments are read before they are
    written. Other overlaps between destination and sources are not supported.
    """

    def __init__(self, config):
        # A rejected instance is not an unused one: keep Amaranth's UnusedElaboratable quiet.
        self._MustUse__silence = True
        if not isinstance(config, KakiConfig):
            raise TypeError(f"config must be a KakiConfig, not {config!r}")
        self._MustUse__silence = False
        self.config = config
        super().__init__({
            "ctl": Out(EngineSignature(SfuCommand)),
            "spad_rd": Out(ReadPortSignature(config.spad_addr_bits, config.dim * 8)),
            "acc_rd": Out(ReadPortSignature(config.acc_addr_bits, config.dim * 32)),
            "spad_wr": Out(WritePortSignature(config.spad_addr_bits, config.dim * 8)),
            "active": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.config
        d = cfg.dim
        lg = (d - 1).bit_length()
        nl = cfg.sfu_lanes                   # physical lanes
        groups = d // nl                     # cycles a segment takes through them
        sa, ca = cfg.spad_addr_bits, cfg.acc_addr_bits
        m = Module()

        # ---- command fields, uniform over the ops ----------------------------------------------
        op = Signal(SfuOp)
        raw = Signal(PAYLOAD_BITS)
        sm, nm, lu, em = (data.View(data.Layout.cast(s), raw)
                          for s in (SoftmaxCmd, NormCmd, LutCmd, EmulCmd))
        src, src2, dst = Signal(20), Signal(20), Signal(20)
        gam, bet = Signal(20), Signal(20)
        rows, length, stride = Signal(16), Signal(16), Signal(20)
        mult, shift = Signal(16), Signal(6)
        zi, zi2, zo = Signal(signed(8)), Signal(signed(8)), Signal(signed(8))
        eps_mant, eps_exp = Signal(16), Signal(6)
        causal, offset = Signal(), Signal(16)
        reserved_bad = Signal()
        is_norm = (op == SfuOp.LAYERNORM) | (op == SfuOp.RMSNORM)
        is_ln = op == SfuOp.LAYERNORM

        segs = Signal(17)
        span = Signal(16 + 20)           # (segs - 1) * stride
        err = Signal(ErrorCode)
        error = Signal(ErrorCode)
        done = Signal()
        m.d.sync += done.eq(0)
        m.d.comb += [self.ctl.done.eq(done), self.ctl.error.eq(error)]

        # ---- loop state ------------------------------------------------------------------------
        row = Signal(16)
        cur = Signal(Pass)
        seg = Signal(17)
        pos = Signal(17 + lg)            # seg * dim
        slot = Signal(2)
        ptr_x, ptr_b, ptr_d = Signal(21), Signal(21), Signal(21)   # row pointers + seg * stride
        ptr_p = Signal(21)               # gamma/beta row offset (seg)
        issuing = Signal()
        inflight = Signal(range(64))
        pending_out = Signal(range(64))

        # Row scalars.
        m_row = Signal(signed(8))
        s_sum = Signal(42)
        s1 = Signal(signed(22))
        s2 = Signal(29)
        recip = Signal(25)               # norms: R <= 2^24
        recip_sm = Signal(16)            # softmax: R < 2^16
        sh = Signal(6)
        zero_d = Signal()

        # Slots of a segment in the current pass.
        n_slots = Mux(cur == Pass.OUT,
                      Mux(is_ln, 3, Mux((op == SfuOp.RMSNORM) | (op == SfuOp.EMUL), 2, 1)), 1)
        seg_end = Mux(cur == Pass.TABLE, N.LUT_ENTRIES // d, segs)
        last_slot = slot == n_slots - 1
        slot_acc = is_norm & (cur == Pass.OUT) & (slot != 0)
        slot_b = (op == SfuOp.EMUL) & (cur == Pass.OUT) & (slot == 1)

        # ---- output FIFO and credits -----------------------------------------------------------
        m.submodules.out_fifo = out_q = fifo.SyncFIFOBuffered(width=sa + d * 8, depth=OUT_DEPTH)
        credit = (pending_out + out_q.level) < OUT_DEPTH - 1
        need_credit = (cur == Pass.OUT) & (slot == 0)
        m.d.comb += [
            self.spad_wr.en.eq(out_q.r_rdy),
            self.spad_wr.addr.eq(out_q.r_data[:sa]),
            self.spad_wr.data.eq(out_q.r_data[sa:]),
            out_q.r_en.eq(self.spad_wr.gnt),
        ]

        # ---- read issue -------------------------------------------------------------------------
        # A segment's groups leave the segment register one a cycle: the next segment's first read
        # waits until its data cannot arrive before the register is free again.
        gap = Signal(range(groups + 1), name="group_gap")
        rd_ok = issuing & (~need_credit | credit) & ((slot != 0) | (gap == 0))
        spad_addr = Mux(cur == Pass.TABLE, src2 + seg, Mux(slot_b, ptr_b, ptr_x))
        acc_addr = Mux(slot == 1, gam, bet) + ptr_p
        m.d.comb += [
            self.spad_rd.en.eq(rd_ok & ~slot_acc),
            self.spad_rd.addr.eq(spad_addr),
            self.acc_rd.en.eq(rd_ok & slot_acc),
            self.acc_rd.addr.eq(acc_addr),
        ]
        granted = Mux(slot_acc, self.acc_rd.en & self.acc_rd.gnt, self.spad_rd.en & self.spad_rd.gnt)

        # Lane mask of the segment (a segment's first slot): inside the row and, with the causal
        # mask, not after the row's own position.
        lim_len = length - pos                                   # > 0 while seg < segs
        lim_causal = row + offset + 1 - pos                      # signed: may be <= 0
        mask_now = Cat(*[Mux(cur == Pass.TABLE, 1, l < lim_len)
                         & (~causal | (op != SfuOp.SOFTMAX) | (l < lim_causal))
                         for l in range(d)])

        m.d.sync += gap.eq(Mux(granted & last_slot & (cur != Pass.MAX), groups - 1,
                               Mux(gap != 0, gap - 1, 0)))

        tag = data.StructLayout({"valid": 1, "slot": 2, "last": 1, "acc": 1, "pass_": Pass,
                                 "mask": d, "seg": 17, "dst": sa})
        tags = [Signal(tag, name=f"rd_tag{k}") for k in range(cfg.mem_read_latency)]
        m.d.sync += [tags[0].valid.eq(granted), tags[0].slot.eq(slot),
                     tags[0].last.eq(last_slot), tags[0].acc.eq(slot_acc),
                     tags[0].pass_.eq(cur), tags[0].mask.eq(mask_now), tags[0].seg.eq(seg),
                     tags[0].dst.eq(ptr_d)]
        m.d.sync += [tags[k].eq(tags[k - 1]) for k in range(1, cfg.mem_read_latency)]
        ret = tags[-1]

        # ---- gather: the segment's operands ------------------------------------------------------
        lat_x = Signal(d * 8, reset_less=True)
        lat_b = Signal(d * 8, reset_less=True)
        lat_g = Signal(d * 32, reset_less=True)
        with m.If(ret.valid & ~ret.acc & (ret.slot == 0)):
            m.d.sync += lat_x.eq(self.spad_rd.data)
        with m.If(ret.valid & ~ret.acc & (ret.slot == 1)):
            m.d.sync += lat_b.eq(self.spad_rd.data)
        with m.If(ret.valid & ret.acc & (ret.slot == 1)):
            m.d.sync += lat_g.eq(self.acc_rd.data)
        fire = ret.valid & ret.last
        x_in = Mux(ret.slot == 0, self.spad_rd.data, lat_x)
        b_in = Mux(ret.slot == 1, self.spad_rd.data, lat_b)
        g_in = Mux(ret.acc & (ret.slot == 1), self.acc_rd.data, lat_g)
        beta_in = self.acc_rd.data                # beta is always an LN segment's last slot

        # ---- the segment register: its lane groups enter the pipeline one a cycle -------------
        seg_x = Signal(d * 8, reset_less=True)
        seg_b = Signal(d * 8, reset_less=True)
        seg_g = Signal(d * 32, reset_less=True)
        seg_beta = Signal(d * 32, reset_less=True)
        seg_meta = Signal(data.StructLayout({"pass_": Pass, "mask": d, "seg": 17, "dst": sa}))
        grp = Signal(range(groups + 1))
        grp_busy = Signal()
        # a softmax's max pass needs no arithmetic lanes: the whole segment is reduced as it
        # arrives (one segment a cycle, whatever the lanes), below
        fire_max = fire & (ret.pass_ == Pass.MAX)
        with m.If(fire & ~fire_max):
            m.d.sync += [seg_x.eq(x_in), seg_b.eq(b_in), seg_g.eq(g_in), seg_beta.eq(beta_in),
                         seg_meta.pass_.eq(ret.pass_), seg_meta.mask.eq(ret.mask),
                         seg_meta.seg.eq(ret.seg), seg_meta.dst.eq(ret.dst),
                         grp_busy.eq(1), grp.eq(0)]
        with m.Elif(grp_busy):
            m.d.sync += grp.eq(grp + 1)
            with m.If(grp == groups - 1):
                m.d.sync += grp_busy.eq(0)
        go = grp_busy                                        # group ``grp`` enters this cycle
        gx = seg_x.word_select(grp, 8 * nl)
        gb = seg_b.word_select(grp, 8 * nl)
        gg = seg_g.word_select(grp, 32 * nl)
        gbeta = seg_beta.word_select(grp, 32 * nl)
        gmask = seg_meta.mask.word_select(grp, nl)
        m.d.comb += self.active.eq((go & (seg_meta.pass_ != Pass.TABLE) & (grp == 0)) | fire_max)

        # ---- lookup tables: a copy per lane, a table row per word --------------------------------
        words = N.LUT_ENTRIES // d
        table_write = go & (seg_meta.pass_ == Pass.TABLE) & (grp == 0)
        lut_y = []
        for l in range(nl):
            mem = Memory(shape=d * 8, depth=words, init=[])
            m.submodules[f"lut{l}"] = mem
            wp = mem.write_port()
            rp = mem.read_port()
            idx = (gx[8 * l:8 * l + 8] + 128)[:8]
            sel = Signal(lg, name=f"lut{l}_sel")
            m.d.comb += [wp.en.eq(table_write), wp.addr.eq(seg_meta.seg), wp.data.eq(seg_x),
                         rp.addr.eq(idx >> lg), rp.en.eq(1)]
            m.d.sync += sel.eq(idx[:lg])
            lut_y.append(rp.data.word_select(sel, 8))

        # ---- compute pipeline --------------------------------------------------------------------
        meta = data.StructLayout({"valid": 1, "pass_": Pass, "mask": nl, "dst": sa,
                                  "grp": range(max(groups, 2)), "last": 1})
        st = [Signal(meta, name=f"e{k}_meta") for k in range(1, STAGES + 1)]
        m.d.sync += [st[0].valid.eq(go), st[0].pass_.eq(seg_meta.pass_), st[0].mask.eq(gmask),
                     st[0].dst.eq(seg_meta.dst), st[0].grp.eq(grp), st[0].last.eq(grp == groups - 1)]
        m.d.sync += [st[k].eq(st[k - 1]) for k in range(1, STAGES)]
        e1, e2, e3, e4, e5, e6 = st

        lanes = []
        for l in range(nl):
            L = {}
            def reg(name, shape, value, lane=l, store=L):
                r = Signal(shape, name=f"l{lane}_{name}", reset_less=True)
                m.d.sync += r.eq(value)
                store[name] = r
                return r
            x = gx[8 * l:8 * l + 8].as_signed()
            b = gb[8 * l:8 * l + 8].as_signed()
            keep = gmask[l]
            # E1: differences from the row max, zero-point offsets, gamma/beta captured
            dd = Mux(keep, m_row - x, 0)[:8]
            reg("u", 24, dd * mult)
            reg("xs", signed(9), x - zi)          # norms' x - zero point; EMUL's a - za
            reg("eb", signed(9), b - zi2)
            reg("g1", signed(32), gg[32 * l:32 * l + 32].as_signed())
            reg("be1", signed(32), gbeta[32 * l:32 * l + 32].as_signed())
            # E2: exponential table lookup, stats squares, c = L*xs - S1, EMUL product
            t0, dt = _exp2_rom(L["u"][N.EXP2_LERP_BITS:N.EXP_FRAC_BITS])
            reg("t", 16, t0)
            reg("dt", 9, dt)
            reg("w", N.EXP2_LERP_BITS, L["u"][:N.EXP2_LERP_BITS])
            reg("n", 8, L["u"][N.EXP_FRAC_BITS:])
            reg("c", signed(23), length * L["xs"] - Mux(is_ln, s1, 0))
            reg("pa", signed(18), L["xs"] * L["eb"])
            reg("g2", signed(32), L["g1"])
            reg("be2", signed(32), L["be1"])
            reg("y2", 8, lut_y[l])
            # E3: interpolation, c * R, EMUL * mult
            lerp = N.EXP2_LERP_BITS
            reg("v", 16, L["t"] - ((L["dt"] * L["w"] + (1 << (lerp - 1))) >> lerp))
            reg("n3", 8, L["n"])
            reg("cr", signed(48), L["c"] * recip)
            reg("pe", signed(35), L["pa"] * mult)
            reg("g3", signed(32), L["g2"])
            reg("be3", signed(32), L["be2"])
            reg("y3", 8, L["y2"])
            # E4: the exponential's shift, z
            k = L["n3"] - (N.EXP_SCALE_BITS - N.EXP2_ONE_BITS)   # n - 10, signed
            up = L["v"] << (-k)[:4]
            down = (L["v"] + (Const(1, 17) << (k - 1)[:5])) >> k[:5]
            reg("e", 26, Mux(k <= 0, up, Mux(k >= 17, 0, down)))
            z = Mux(zero_d, 0, (L["cr"] + (Const(1, 48) << (sh - 1)[:6])) >> sh)
            reg("z", signed(25), z)
            reg("pe4", signed(35), L["pe"])
            reg("g4", signed(32), L["g3"])
            reg("be4", signed(32), L["be3"])
            reg("y4", 8, L["y3"])
            # E5: softmax numerator * reciprocal; z * gamma + beta
            reg("prod", 42, L["e"] * recip_sm)
            reg("p", signed(58), Mux(op == SfuOp.EMUL, L["pe4"],
                                     L["z"] * L["g4"] + Mux(is_ln, L["be4"], 0)))
            reg("y5", 8, L["y4"])
            # E6: the output byte
            rb = N.SOFTMAX_RECIP_BITS
            y_sm = (L["prod"] + (1 << (rb - 1))) >> rb
            y_sm = Mux(y_sm > N.SOFTMAX_ONE, N.SOFTMAX_ONE, y_sm)[:8]
            y_q = _clamp_i8(_round_shift(L["p"], shift) + zo)
            y = Mux(op == SfuOp.SOFTMAX, y_sm, Mux(op == SfuOp.LUT, L["y5"], y_q))
            reg("y", 8, Mux(e5.mask[l], y, 0))
            lanes.append(L)

        # ---- reductions ---------------------------------------------------------------------------
        def tree(values, fn):
            while len(values) > 1:
                values = [fn(values[i], values[i + 1]) if i + 1 < len(values) else values[i]
                          for i in range(0, len(values), 2)]
            return values[0]

        seg_max = tree([Mux(ret.mask[l], x_in[8 * l:8 * l + 8].as_signed(), -128) for l in range(d)],
                       lambda a, b: Mux(a > b, a, b))
        row_start = Signal()
        with m.If(row_start):
            m.d.sync += [m_row.eq(-128), s_sum.eq(0), s1.eq(0), s2.eq(0)]
        with m.Elif(fire_max):
            m.d.sync += m_row.eq(Mux(seg_max > m_row, seg_max, m_row))
        with m.Elif(e4.valid & (e4.pass_ == Pass.SUM)):
            m.d.sync += s_sum.eq(s_sum + tree([Mux(e4.mask[l], lanes[l]["e"], 0) for l in range(nl)],
                                               lambda a, b: a + b))
        with m.Elif(e1.valid & (e1.pass_ == Pass.STATS)):
            xs = [Mux(e1.mask[l], lanes[l]["xs"], 0) for l in range(nl)]
            m.d.sync += [s1.eq(s1 + tree(xs, lambda a, b: a + b)),
                         s2.eq(s2 + tree([v * v for v in xs], lambda a, b: a + b))]

        # the result row, a group at a time; pushed with its last group
        row_out = Signal(d * 8, reset_less=True)
        y_grp = Cat(*[lanes[l]["y"] for l in range(nl)])
        with m.If(e6.valid):
            m.d.sync += row_out.word_select(e6.grp, 8 * nl).eq(y_grp)
        row_done = e6.valid & e6.last
        m.d.comb += [out_q.w_en.eq(row_done & (e6.pass_ == Pass.OUT)),
                     out_q.w_data.eq(Cat(e6.dst, *[Mux(e6.grp == g, y_grp,
                                                       row_out.word_select(g, 8 * nl))
                                                   for g in range(groups)]))]

        # in flight: segments from their first granted read to the end of the pipeline
        seg_in = granted & (slot == 0)
        m.d.sync += inflight.eq(inflight + seg_in - row_done - fire_max)
        out_in = granted & (slot == 0) & (cur == Pass.OUT)
        m.d.sync += pending_out.eq(pending_out + out_in - (row_done & (e6.pass_ == Pass.OUT)))

        # ---- sequential square root and divider -------------------------------------------------
        sq_n = Signal(SQRT_IN_BITS)
        sq_rem = Signal(SQRT_OUT_BITS + 4)
        sq_root = Signal(SQRT_OUT_BITS)
        sq_cnt = Signal(range(SQRT_OUT_BITS + 1))
        dv_num = Signal(DIV_NUM_BITS)
        dv_den = Signal(SQRT_OUT_BITS + 2)
        dv_rem = Signal(SQRT_OUT_BITS + 4)
        dv_q = Signal(32)
        dv_cnt = Signal(range(DIV_NUM_BITS + 1))
        d_val = Signal(43)
        bitlen = Signal(6)
        m.d.comb += bitlen.eq(0)
        for i in range(SQRT_OUT_BITS):
            with m.If(sq_root[i]):
                m.d.comb += bitlen.eq(i + 1)

        # ---- control -------------------------------------------------------------------------------
        seg_adv = granted & last_slot
        with m.FSM(init="IDLE", name="sfu_fsm") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.ctl.cmd.ready.eq(1)
                with m.If(self.ctl.cmd.valid):
                    m.d.sync += [op.eq(self.ctl.cmd.payload.op), raw.eq(self.ctl.cmd.payload.payload)]
                    m.next = "DECODE"
            with m.State("DECODE"):
                common = [rows.eq(sm.rows), length.eq(sm.length), stride.eq(sm.seg_stride),
                          src.eq(sm.src_addr), dst.eq(sm.dst_addr), causal.eq(0), zi.eq(0),
                          zi2.eq(0), zo.eq(0), mult.eq(0), shift.eq(0), src2.eq(0), gam.eq(0),
                          bet.eq(0), eps_mant.eq(0), eps_exp.eq(0), offset.eq(0)]
                m.d.sync += common
                with m.Switch(op):
                    with m.Case(SfuOp.SOFTMAX):
                        m.d.sync += [mult.eq(sm.mult), causal.eq(sm.causal),
                                     offset.eq(sm.mask_offset), reserved_bad.eq(sm.reserved != 0)]
                    with m.Case(SfuOp.LAYERNORM, SfuOp.RMSNORM):
                        m.d.sync += [gam.eq(nm.gamma_addr), bet.eq(nm.beta_addr), shift.eq(nm.shift),
                                     zi.eq(nm.in_zero_point), zo.eq(nm.out_zero_point),
                                     eps_mant.eq(nm.eps_mant), eps_exp.eq(nm.eps_exp),
                                     reserved_bad.eq(nm.reserved != 0)]
                    with m.Case(SfuOp.LUT):
                        m.d.sync += [src2.eq(lu.table_addr), reserved_bad.eq(lu.reserved != 0)]
                    with m.Case(SfuOp.EMUL):
                        m.d.sync += [src.eq(em.a_addr), src2.eq(em.b_addr), dst.eq(em.dst_addr),
                                     rows.eq(em.rows), length.eq(em.length),
                                     stride.eq(em.seg_stride), mult.eq(em.mult),
                                     shift.eq(em.shift), zi.eq(em.a_zero_point),
                                     zi2.eq(em.b_zero_point), zo.eq(em.out_zero_point),
                                     reserved_bad.eq(em.reserved != 0)]
                    with m.Default():
                        m.d.sync += reserved_bad.eq(1)
                m.next = "CHECK1"
            with m.State("CHECK1"):
                m.d.sync += segs.eq((length + (d - 1)) >> lg)
                m.next = "CHECK2"
            with m.State("CHECK2"):
                m.d.sync += span.eq((segs - 1)[:16] * stride)
                m.next = "CHECK3"
            with m.State("CHECK3"):
                last = lambda base: base + span + rows - 1
                bad_range = ((last(src) >= cfg.spad_rows) | (last(dst) >= cfg.spad_rows)
                             | ((op == SfuOp.EMUL) & (last(src2) >= cfg.spad_rows))
                             | ((op == SfuOp.LUT) & (src2 + (words - 1) >= cfg.spad_rows))
                             | (is_norm & (gam + segs - 1 >= cfg.acc_rows))
                             | (is_ln & (bet + segs - 1 >= cfg.acc_rows)))
                bad_shape = (rows == 0) | (length == 0) | (is_norm & (length > N.NORM_MAX_LEN))
                with m.If(reserved_bad):
                    m.d.sync += err.eq(ErrorCode.RESERVED_BITS)
                with m.Elif(bad_shape):
                    m.d.sync += err.eq(ErrorCode.BAD_SHAPE)
                with m.Elif(bad_range):
                    m.d.sync += err.eq(ErrorCode.LOCAL_RANGE)
                with m.Else():
                    m.d.sync += err.eq(ErrorCode.OK)
                m.next = "DECIDE"
            with m.State("DECIDE"):
                with m.If(err != ErrorCode.OK):
                    m.d.sync += [done.eq(1), error.eq(err)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += row.eq(0)
                    with m.If(op == SfuOp.LUT):
                        m.d.sync += [cur.eq(Pass.TABLE), seg.eq(0), slot.eq(0)]
                        m.next = "ISSUE"
                    with m.Else():
                        m.next = "ROW"
            with m.State("ROW"):
                m.d.comb += row_start.eq(1)
                m.d.sync += [seg.eq(0), pos.eq(0), slot.eq(0), ptr_p.eq(0),
                             ptr_x.eq(src + row), ptr_b.eq(src2 + row), ptr_d.eq(dst + row),
                             cur.as_value().eq(Mux(op == SfuOp.SOFTMAX, Pass.MAX.value,
                                                   Mux(is_norm, Pass.STATS.value, Pass.OUT.value)))]
                m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += issuing.eq(1)
                with m.If(granted):
                    m.d.sync += slot.eq(Mux(last_slot, 0, slot + 1))
                with m.If(seg_adv):
                    m.d.sync += [seg.eq(seg + 1), pos.eq(pos + d), ptr_p.eq(ptr_p + 1),
                                 ptr_x.eq(ptr_x + stride), ptr_b.eq(ptr_b + stride),
                                 ptr_d.eq(ptr_d + stride)]
                    with m.If(seg + 1 == seg_end):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(inflight == 0):
                    with m.Switch(cur):
                        with m.Case(Pass.TABLE):
                            m.next = "ROW"
                        with m.Case(Pass.MAX):
                            m.d.sync += cur.eq(Pass.SUM)
                            m.next = "AGAIN"
                        with m.Case(Pass.SUM):
                            m.d.sync += [dv_num.eq(N.SOFTMAX_ONE << N.SOFTMAX_RECIP_BITS),
                                         dv_den.eq(s_sum), dv_rem.eq(0), dv_q.eq(0),
                                         dv_cnt.eq(DIV_NUM_BITS)]
                            m.next = "DIV"
                        with m.Case(Pass.STATS):
                            m.d.sync += d_val.eq(length * s2 - Mux(is_ln, s1 * s1, 0))
                            m.next = "RADICAND"
                        with m.Default():                   # OUT: the row is done
                            with m.If(row + 1 == rows):
                                m.next = "FINISH"
                            with m.Else():
                                m.d.sync += row.eq(row + 1)
                                m.next = "ROW"
            with m.State("AGAIN"):                          # the next pass over the same row
                m.d.sync += [seg.eq(0), pos.eq(0), slot.eq(0), ptr_p.eq(0),
                             ptr_x.eq(src + row), ptr_b.eq(src2 + row), ptr_d.eq(dst + row)]
                m.next = "ISSUE"
            with m.State("RADICAND"):
                m.d.sync += [zero_d.eq(d_val == 0),
                             sq_n.eq((d_val << (2 * N.NORM_SQRT_FRAC_BITS))
                                     + (eps_mant << eps_exp)),
                             sq_rem.eq(0), sq_root.eq(0), sq_cnt.eq(SQRT_OUT_BITS)]
                m.next = "SQRT"
            with m.State("SQRT"):
                rem2 = Cat(sq_n[-2:], sq_rem)
                trial = Cat(Const(1, 2), sq_root)
                ge = rem2 >= trial
                m.d.sync += [sq_n.eq(sq_n << 2), sq_cnt.eq(sq_cnt - 1),
                             sq_rem.eq(Mux(ge, rem2 - trial, rem2)),
                             sq_root.eq(Cat(ge, sq_root))]
                with m.If(sq_cnt == 1):
                    m.next = "NORM_DIV"
            with m.State("NORM_DIV"):
                with m.If(zero_d):
                    m.d.sync += cur.eq(Pass.OUT)
                    m.next = "AGAIN"
                with m.Else():
                    m.d.sync += [dv_num.eq(Const(1, DIV_NUM_BITS) << (bitlen + N.NORM_RECIP_BITS)),
                                 dv_den.eq(sq_root), dv_rem.eq(0), dv_q.eq(0),
                                 dv_cnt.eq(DIV_NUM_BITS),
                                 sh.eq(bitlen + N.NORM_RECIP_BITS - N.NORM_SQRT_FRAC_BITS
                                       - N.NORM_Z_FRAC_BITS)]
                    m.next = "DIV"
            with m.State("DIV"):
                r2 = Cat(dv_num[-1], dv_rem)
                ge = r2 >= dv_den
                m.d.sync += [dv_num.eq(dv_num << 1), dv_cnt.eq(dv_cnt - 1),
                             dv_rem.eq(Mux(ge, r2 - dv_den, r2)), dv_q.eq(Cat(ge, dv_q))]
                with m.If(dv_cnt == 1):
                    m.next = "DIV_DONE"
            with m.State("DIV_DONE"):
                m.d.sync += [recip.eq(dv_q), recip_sm.eq(dv_q), cur.eq(Pass.OUT)]
                m.next = "AGAIN"
            with m.State("FINISH"):
                with m.If((inflight == 0) & ~out_q.r_rdy & (out_q.level == 0)):
                    m.d.sync += [done.eq(1), error.eq(ErrorCode.OK)]
                    m.next = "IDLE"
        m.d.comb += self.ctl.busy.eq(~fsm.ongoing("IDLE"))
        return m
