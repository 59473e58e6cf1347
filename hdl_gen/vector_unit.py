"""Vector unit: the fused GEMM epilogue (bias, requantize, ReLU, residual add, max-reduce).

Turns int32 accumulator rows into int8 scratchpad rows, one row per cycle in steady state, every
lane in parallel, exactly as docs/numerics.md specifies.
"""
from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from .config import KakiConfig
from .descriptor import ErrorCode, VecCmd
from .engine import EngineSignature
from .mem_port import ReadPortSignature, WritePortSignature

#: Pipeline stages of a row after its data arrives from the memories (the last drives the write).
STAGES = 6


def pipeline_latency(config):
    """Cycles from the cycle a row's read is granted to the cycle its write (``spad_wr.en``) is
    driven: the memories' read latency, then :data:`STAGES`."""
    return config.mem_read_latency + STAGES


#: :func:`pipeline_latency` of the default chip.
PIPELINE_LATENCY = pipeline_latency(KakiConfig())

#: Widest address a VECTOR descriptor can name (its address fields are 20 bits).
DESC_ADDR_BITS = 20


def _clamp_i8(v):
    """``v`` (a signed value of any width) saturated to -128..127, as ``signed(8)``."""
    return Mux(v > 127, 127, Mux(v < -128, -128, v))[:8].as_signed()


def _max(a, b):
    return Mux(a > b, a, b)


class VectorUnit(wiring.Component):
    """Executes VECTOR commands (:class:`~hdl_gen.descriptor.VecCmd`).

    Ports
    -----
    ctl : Out(EngineSignature(VecCmd)) — command link from the dispatcher:
        ``ctl.cmd`` (in: valid, payload :class:`VecCmd`; out: ready) accepted only when idle;
        ``ctl.done`` (out, 1) pulses one cycle after the command's last scratchpad write (or after
        the error is found); ``ctl.error`` (out, :class:`ErrorCode`) is valid with ``done``;
        ``ctl.busy`` (out, 1) is high from the cycle after acceptance through the ``done`` cycle.
    acc_rd : Out(ReadPortSignature(acc_addr_bits, dim*32)) — accumulator read requester (addr, en
        out; gnt, data in). Reads the parameter rows, then one source row per cycle. It may be
        denied (priority 1 in the SoC): the unit retries.
    spad_rd : Out(ReadPortSignature(spad_addr_bits, dim*8)) — scratchpad read requester for the
        residual rows (``ops.add``). May be denied: the unit retries.
    spad_wr : Out(WritePortSignature(spad_addr_bits, dim*8)) — scratchpad write requester for the
        int8 result rows. **It must always be granted** (it has priority 0 in the SoC); ``gnt`` is
        not looked at, a denied write would be lost.
    active : Out(1) — a row entered the pipeline this cycle (performance counter).

    Operation
    ---------
    1. Accept a command, then validate it (one cycle): reserved bits → ``RESERVED_BITS``;
       ``rows == 0`` → ``BAD_SHAPE``; any touched row out of range (source and parameter rows
       against the accumulator, destination and residual rows against the scratchpad) →
       ``LOCAL_RANGE``. The bias row is only read (and range checked) with ``ops.bias``, the
       residual rows only with ``ops.add``; with ``ops.maxred`` only ``dst_addr`` is written.
    2. Read the shift, bias (if enabled) and multiplier rows into registers, one granted read each.
       A shift lane (an int32) outside 0..63 → ``BAD_SHIFT``, decided after the last read (the
       shift row comes first so that its check is registered per lane, not computed from the
       block RAM's output in the deciding cycle). Every error retires with ``done`` and
       its code before anything is written.
    3. Stream the rows: row ``r`` enters the pipeline only in a cycle where its accumulator read
       (``src_addr + r``) *and*, with ``ops.add``, its residual read (``res_addr + r``) are both
       granted; otherwise both are retried (a lone grant is wasted). The pipeline never stalls:
       the write of a row is driven exactly :func:`pipeline_latency` cycles after its reads were
       granted (stages: bias add | two 32x16 products | 64-bit sum | shift and rounding bit |
       rounding, zero point, clamp, ReLU | residual add into the write registers).
    4. Without ``ops.maxred`` row ``r`` is written at ``dst_addr + r``; with it a running
       column-wise max is kept and one row is written at ``dst_addr`` after the last row.

    The residual rows are read ahead of the writes, so ``dst`` may equal ``res`` (in place) or lie
    below it; a destination range that starts above ``res_addr`` and overlaps the residual rows
    is not supported (later residual reads could see new results).
    """

    def __init__(self, config):
        # A rejected instance is not an unused one: keep Amaranth's UnusedElaboratable quiet.
        self._MustUse__silence = True
        if not isinstance(config, KakiConfig):
            raise TypeError(f"config must be a KakiConfig, not {config!r}")
        for name in ("acc_rows", "spad_rows"):
            if getattr(config, name) > 2 ** DESC_ADDR_BITS:
                raise ValueError(f"{name} = {getattr(config, name)} exceeds what a "
                                 f"{DESC_ADDR_BITS}-bit descriptor address can reach")
        self._MustUse__silence = False
        self.config = config
        super().__init__({
            "ctl": Out(EngineSignature(VecCmd)),
            "acc_rd": Out(ReadPortSignature(config.acc_addr_bits, config.dim * 32)),
            "spad_rd": Out(ReadPortSignature(config.spad_addr_bits, config.dim * 8)),
            "spad_wr": Out(WritePortSignature(config.spad_addr_bits, config.dim * 8)),
            "active": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.config
        dim = cfg.dim
        m = Module()

        cmd = Signal(VecCmd)
        err = Signal(ErrorCode)

        # Per-channel parameters, loaded at command start. Data registers (these, the stages) are
        # not reset: only the valid bits and the control are, which keeps the engine reset's
        # fanout small (docs/synthesis.md).
        bias = [Signal(signed(32), name=f"bias_{c}", reset_less=True) for c in range(dim)]
        mult = [Signal(signed(32), name=f"mult_{c}", reset_less=True) for c in range(dim)]
        shift = [Signal(6, name=f"shift_{c}", reset_less=True) for c in range(dim)]

        # Parameter fetch: pidx is the row being requested (0 shift, 1 bias, 2 mult); a grant sets
        # cap_valid/cap_idx so the row is captured from acc_rd.data in the next cycle.
        pidx = Signal(2)
        # a parameter read granted (and which) this cycle, then its data mem_read_latency later
        granted = Signal()
        cap = [(Signal(name=f"cap_valid{k}"), Signal(2, name=f"cap_idx{k}"))
               for k in range(cfg.mem_read_latency)]
        m.d.sync += [cap[0][0].eq(granted), cap[0][1].eq(pidx)]
        m.d.sync += [x.eq(y) for k in range(1, len(cap)) for x, y in zip(cap[k], cap[k - 1])]
        cap_valid, cap_idx = cap[-1]
        shift_high = Signal(dim, name="shift_out_of_range")   # per lane: shift row >= 64 or < 0

        issued = Signal(17)      # rows whose reads were granted (entered the pipeline)
        more = Signal()          # issued != rows, registered
        # Read addresses are registers (no adder or multiplexer in front of the memories'
        # arbiters, whose address nets reach block RAMs across the whole die).
        acc_ptr = Signal(cfg.acc_addr_bits)     # parameter row being fetched, then src_addr + issued
        res_ptr = Signal(cfg.spad_addr_bits)    # res_addr + issued
        retired = Signal(17)     # rows that left the last stage
        fire = Signal()

        acc_lanes = [self.acc_rd.data[32 * c:32 * (c + 1)].as_signed() for c in range(dim)]

        with m.If(cap_valid):
            with m.Switch(cap_idx):
                with m.Case(0):
                    m.d.sync += [s.eq(v[:6]) for s, v in zip(shift, acc_lanes)]
                    m.d.sync += shift_high.eq(Cat(*[v[6:] != 0 for v in acc_lanes]))
                with m.Case(1):
                    m.d.sync += [b.eq(v) for b, v in zip(bias, acc_lanes)]
                with m.Case(2):
                    m.d.sync += [k.eq(v) for k, v in zip(mult, acc_lanes)]

        # ---- validation (combinational on the latched command) ----
        ops = cmd.ops
        rows = cmd.rows
        reserved_bad = (cmd.reserved != 0) | (ops.reserved != 0)
        shape_bad = rows == 0
        acc_rows, spad_rows = cfg.acc_rows, cfg.spad_rows
        range_bad = Signal()
        m.d.comb += range_bad.eq(
            (cmd.src_addr + rows > acc_rows)
            | (ops.bias & (cmd.bias_addr >= acc_rows))
            | (cmd.mult_addr >= acc_rows)
            | (cmd.shift_addr >= acc_rows)
            | Mux(ops.maxred, cmd.dst_addr >= spad_rows, cmd.dst_addr + rows > spad_rows)
            | (ops.add & (cmd.res_addr + rows > spad_rows)))

        # ---- control FSM ----
        with m.FSM(init="IDLE", name="vec_fsm") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.ctl.cmd.ready.eq(1)
                with m.If(self.ctl.cmd.valid):
                    m.d.sync += [cmd.eq(self.ctl.cmd.payload), err.eq(ErrorCode.OK),
                                 issued.eq(0), retired.eq(0)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                # Bias is zero for a command without one; cleared whatever the checks decide (a
                # refused command leaves nothing behind that the next one would read), so the
                # 256 bias bits' enable does not wait for the range check's carry chains.
                with m.If(~ops.bias):
                    m.d.sync += [b.eq(0) for b in bias]
                with m.If(reserved_bad):
                    m.d.sync += err.eq(ErrorCode.RESERVED_BITS)
                    m.next = "FIN"
                with m.Elif(shape_bad):
                    m.d.sync += err.eq(ErrorCode.BAD_SHAPE)
                    m.next = "FIN"
                with m.Elif(range_bad):
                    m.d.sync += err.eq(ErrorCode.LOCAL_RANGE)
                    m.next = "FIN"
                with m.Else():
                    m.d.sync += [pidx.eq(0), acc_ptr.eq(cmd.shift_addr), res_ptr.eq(cmd.res_addr),
                                 more.eq(1)]
                    m.next = "PARAM"
            with m.State("PARAM"):
                m.d.comb += self.acc_rd.en.eq(1)
                m.d.comb += granted.eq(self.acc_rd.gnt)
                with m.If(self.acc_rd.gnt):
                    nxt = Mux((pidx == 0) & ~ops.bias, 2, pidx + 1)
                    m.d.sync += [pidx.eq(nxt),
                                 acc_ptr.eq(Mux(pidx == 2, cmd.src_addr,
                                                Mux(nxt == 1, cmd.bias_addr, cmd.mult_addr)))]
                    with m.If(pidx == 2):
                        m.next = "SHIFT_CHECK" if cfg.mem_read_latency == 1 else "PARAM_WAIT"
            if cfg.mem_read_latency > 1:
                with m.State("PARAM_WAIT"):
                    # until the multiplier row's data comes next cycle
                    with m.If(cap[-2][0] & (cap[-2][1] == 2)):
                        m.next = "SHIFT_CHECK"
            with m.State("SHIFT_CHECK"):
                # The multiplier row is being captured; the shift row's check is registered.
                with m.If(shift_high.any()):
                    m.d.sync += err.eq(ErrorCode.BAD_SHIFT)
                    m.next = "FIN"
                with m.Else():
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [
                    self.acc_rd.en.eq(more),
                    self.spad_rd.en.eq(more & ops.add),
                    fire.eq(more & self.acc_rd.gnt & (self.spad_rd.gnt | ~ops.add)),
                ]
                with m.If(fire):
                    m.d.sync += [issued.eq(issued + 1), more.eq(issued + 1 != rows),
                                 acc_ptr.eq(acc_ptr + 1), res_ptr.eq(res_ptr + 1)]
                with m.If(retired == rows):
                    # Every row left the pipeline; without maxred the last write is on the port now.
                    with m.If(ops.maxred):
                        m.next = "MAX_WRITE"
                    with m.Else():
                        m.next = "FIN"
            with m.State("MAX_WRITE"):
                # The reduced row is on the write port this cycle (loaded by the datapath below).
                m.next = "FIN"
            with m.State("FIN"):
                m.d.comb += self.ctl.done.eq(1)
                m.next = "IDLE"
        m.d.comb += [
            self.ctl.busy.eq(~fsm.ongoing("IDLE")),
            self.ctl.error.eq(err),
            self.active.eq(fire),
            self.acc_rd.addr.eq(acc_ptr),
            self.spad_rd.addr.eq(res_ptr),
        ]

        # ---- datapath: a valid bit travels with each row; the pipeline never stalls ----
        # v[0]: memory data of a fired row is on acc_rd.data / spad_rd.data; v[i]: it is in stage
        # i; before v[0], rows whose reads are in the memories (mem_read_latency > 1).
        inflight = [Signal(name=f"inflight{k}") for k in range(1, cfg.mem_read_latency)]
        v = inflight + [Signal(name=f"v{i}") for i in range(STAGES)]
        m.d.sync += [v[0].eq(fire)] + [v[i].eq(v[i - 1]) for i in range(1, len(v))]
        v = v[len(inflight):]

        res_lanes0 = [self.spad_rd.data[8 * c:8 * (c + 1)].as_signed() for c in range(dim)]
        # The residual byte of each row rides along the stages.
        res = [[Signal(signed(8), name=f"res{i}_{c}", reset_less=True) for c in range(dim)] for i in range(1, 6)]
        for c in range(dim):
            m.d.sync += res[0][c].eq(Mux(v[0], res_lanes0[c], res[0][c]))
            for i in range(1, 5):
                m.d.sync += res[i][c].eq(Mux(v[i], res[i - 1][c], res[i][c]))
        out = [Signal(signed(8), name=f"out6_{c}") for c in range(dim)]
        zp = cmd.zero_point.as_signed()
        for c in range(dim):
            m.d.comb += out[c].eq(self._lane(m, c, v, acc_lanes[c], bias[c], mult[c], shift[c], zp,
                                             ops, res[4][c]))
        max_row = [Signal(signed(8), name=f"max6_{c}", reset_less=True) for c in range(dim)]

        wr_en = Signal()
        wr_addr = Signal(cfg.spad_addr_bits, reset_less=True)
        wr_data = Signal(dim * 8, reset_less=True)
        m.d.sync += wr_en.eq(0)
        with m.If(v[-1]):
            m.d.sync += retired.eq(retired + 1)
            with m.If(ops.maxred):
                for c in range(dim):
                    m.d.sync += max_row[c].eq(Mux(retired == 0, out[c], _max(max_row[c], out[c])))
            with m.Else():
                m.d.sync += [wr_en.eq(1), wr_addr.eq(cmd.dst_addr + retired),
                             wr_data.eq(Cat(*out))]
        with m.If(fsm.ongoing("RUN") & (retired == rows) & ops.maxred):
            m.d.sync += [wr_en.eq(1), wr_addr.eq(cmd.dst_addr), wr_data.eq(Cat(*max_row))]
        m.d.comb += [self.spad_wr.en.eq(wr_en), self.spad_wr.addr.eq(wr_addr),
                     self.spad_wr.data.eq(wr_data)]
        return m

    @staticmethod
    def _lane(m, c, v, acc, bias, mult, shift, zp, ops, res):
        """One lane's epilogue stages (registers advance only with their row's valid bit ``v[i]``);
        returns the lane's int8 result, valid in the cycle ``v[-1]`` is high.

        The stages are cut for the clock (docs/synthesis.md): the 32x32 product is summed from
        two 32x16 halves one stage later, and the rounding shift ``(p + 2^(s-1)) >> s`` is
        computed as ``(p >> s) + p[s-1]`` (the carry of the half added into the kept bits is
        exactly the bit below them), so no 66-bit adder sits in front of the shifter.
        """
        def stage(i, name, shape, value):
            r = Signal(shape, name=f"{name}_{c}", reset_less=True)
            m.d.sync += r.eq(Mux(v[i], value, r))
            return r
        # 1: wrapping int32 bias add (bias is zero when ops.bias is clear).
        x = stage(0, "x1", signed(32), (acc + bias)[:32].as_signed())
        # 2: the product's two halves: x * mult[0:16] (unsigned half) and x * mult[16:32] (signed).
        lo = stage(1, "plo2", signed(49), x * mult[:16])
        hi = stage(1, "phi2", signed(48), x * mult[16:].as_signed())
        # 3: the exact 64-bit product.
        p = stage(2, "p3", signed(64), lo + (hi << 16))
        # 4: arithmetic shift by s and the rounding bit p[s-1] (none when s == 0).
        sh = stage(3, "sh4", signed(64), p >> shift)
        rb = stage(3, "rb4", 1, (p.as_unsigned() << 1).bit_select(shift, 1))
        # 5: + rounding bit + zero point, saturated to int8 (|zp| <= 128, so any |sh| >= 1024
        # saturates whatever the rest), ReLU.
        fits = Signal(name=f"fits5_{c}")
        m.d.comb += fits.eq((sh[10:] == 0) | (sh[10:] == (2 ** 54 - 1)))
        y = Mux(fits, _clamp_i8(sh[:11].as_signed() + rb + zp), Mux(sh[63], -128, 127)).as_signed()
        y5 = stage(4, "y5", signed(8), Mux(ops.relu, _max(y, zp), y))
        # 6 (combinational into the write registers): saturating residual add.
        return Mux(ops.add, _clamp_i8(y5 + res), y5)
