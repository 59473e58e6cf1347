"""The peer path as a block, in Amaranth's simulator: PeerEngine (DMA_PEER) -> ChipLink -> LinkRx
-> memories, the accumulator adds through AccAdder (hdl_gen/peer_engine.py), with memory models
that deny reads and writes at random. Every transfer (scratchpad and accumulator writes,
accumulator adds, with and without an event) is compared with the golden device models
(golden/device_model.py, two chips joined by ``peer``); the errors end the command with their
code; a link that goes down ends it with LINK_TIMEOUT. Seed printed, ``SEED=`` reruns it."""
import os
import random

import numpy as np
from amaranth import Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from golden.device_model import DeviceModel
from hdl_gen.chip_link import ChipLink, LinkRx
from hdl_gen.config import KakiConfig
from hdl_gen.descriptor import ErrorCode as HwError, PeerCmd
from hdl_gen.engine import EngineSignature
from hdl_gen.mem_port import ReadPortSignature, WritePortSignature
from hdl_gen.peer_engine import MEM_WIDTHS, AccAdder, PeerEngine
from spec.capabilities import Capabilities
from spec.commands import encode
from spec.descriptors import ErrorCode, Opcode

CFG = KakiConfig(dim=4, spad_bank_rows=16, acc_bank_rows=16)     # 64 scratchpad, 32 acc rows
CAPS = Capabilities.from_config(CFG)


class PeerPath(wiring.Component):
    """Chip 0's peer channel, the link, chip 1's receiver; the memories are the testbench's."""

    def __init__(self, cfg, latency=2, nbytes=8, depth=5):
        self.cfg, self.latency, self.nbytes, self.depth = cfg, latency, nbytes, depth
        rows = (cfg.spad_rows, cfg.acc_rows, cfg.acc_rows)
        self.mems = list(zip(rows, MEM_WIDTHS(cfg)))
        self.rx = rx = LinkRx(nbytes, self.mems, events=cfg.events)
        super().__init__({
            "ctl": Out(EngineSignature(PeerCmd)),
            "spad_rd": Out(ReadPortSignature(cfg.spad_addr_bits, cfg.dim * 8)),
            "acc_rd": Out(ReadPortSignature(cfg.acc_addr_bits, cfg.dim * 32)),
            "wr0": Out(rx.wr0.signature), "wr1": Out(rx.wr1.signature),
            "add_rd": Out(ReadPortSignature(cfg.acc_addr_bits, cfg.dim * 32)),
            "add_wr": Out(WritePortSignature(cfg.acc_addr_bits, cfg.dim * 32)),
            "event_valid": Out(1), "event_index": Out(8), "event_value": Out(32),
            "rx_error": Out(4), "rx_error_valid": Out(1),
            "timeout": In(16), "down": In(1), "failed": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.peer = peer = PeerEngine(self.cfg, self.nbytes)
        m.submodules.link = link = ChipLink(self.latency, self.nbytes, self.depth)
        m.submodules.rx = rx = self.rx
        m.submodules.adder = adder = AccAdder(self.cfg)
        wiring.connect(m, wiring.flipped(self.ctl), peer.ctl)
        wiring.connect(m, peer.spad_rd, wiring.flipped(self.spad_rd))
        wiring.connect(m, peer.acc_rd, wiring.flipped(self.acc_rd))
        wiring.connect(m, peer.link, link.tx)
        wiring.connect(m, link.rx, rx.link)
        wiring.connect(m, rx.wr0, wiring.flipped(self.wr0))
        wiring.connect(m, rx.wr1, wiring.flipped(self.wr1))
        wiring.connect(m, rx.wr2, adder.req)
        wiring.connect(m, adder.rd, wiring.flipped(self.add_rd))
        wiring.connect(m, adder.wr, wiring.flipped(self.add_wr))
        m.d.comb += [rx.chip_id.eq(1), link.timeout.eq(self.timeout), link.fault_down.eq(self.down),
                     peer.failed.eq(link.failed), self.failed.eq(link.failed),
                     self.event_valid.eq(rx.event.valid), self.event_index.eq(rx.event.index),
                     self.event_value.eq(rx.event.value), self.rx_error.eq(rx.error.code.as_value()),
                     self.rx_error_valid.eq(rx.error.valid)]
        return m


def _row_int(row, bits):
    return sum((int(v) & ((1 << bits) - 1)) << (bits * i) for i, v in enumerate(row))


def _int_row(value, bits, n, dtype):
    lanes = [(value >> (bits * i)) & ((1 << bits) - 1) for i in range(n)]
    return np.array(lanes, dtype=np.uint64).astype({8: np.uint8, 32: np.uint32}[bits]).view(dtype)


def test_peer_path_random():
    seed = int(os.environ.get("SEED") or random.SystemRandom().randrange(1, 2**31))
    print(f"SEED={seed}")
    rng = np.random.default_rng(seed)
    dut = PeerPath(CFG)
    a = DeviceModel(CAPS, host_bytes=1 << 12, chip_id=0)
    b = DeviceModel(CAPS, host_bytes=1 << 12, chip_id=1)
    a.peer = b
    a.spad[:] = rng.integers(-128, 128, a.spad.shape)
    a.acc[:] = rng.integers(-2**31, 2**31, a.acc.shape)
    b.spad[:] = rng.integers(-128, 128, b.spad.shape)
    b.acc[:] = rng.integers(-2**31, 2**31, b.acc.shape)
    # the RTL's memories: chip 0's (read by the peer channel), chip 1's (written, added)
    mem0 = {"spad": a.spad.copy(), "acc": a.acc.copy()}
    mem1 = {"spad": b.spad.copy(), "acc": b.acc.copy()}
    p_gnt = float(rng.uniform(0.3, 1.0))
    lat = CFG.mem_read_latency
    events, errors = [], []
    cmds = []
    for k in range(14):
        acc = bool(rng.integers(2))
        add = acc and bool(rng.integers(2))
        limit = CAPS.acc_rows if acc else CAPS.spad_rows
        n = int(rng.integers(1, 12))
        f = dict(local_addr=int(rng.integers(0, limit - n + 1)), peer_addr=int(rng.integers(0, limit - n + 1)),
                 rows=n, acc=int(acc), add=int(add), dest=1)
        if rng.integers(2):
            f.update(signal=1, event=int(rng.integers(16)), value=int(rng.integers(0, 2**32)))
        cmds.append(f)
    # errors, each changing nothing
    cmds += [dict(local_addr=0, peer_addr=CAPS.spad_rows - 1, rows=2, dest=1),
             dict(local_addr=0, peer_addr=0, rows=0, dest=1),
             dict(local_addr=0, peer_addr=0, rows=1, add=1, dest=1),
             dict(local_addr=0, peer_addr=0, rows=1, signal=1, event=16, dest=1)]
    results = []

    async def memories(ctx):
        """Chip 0's and chip 1's memories: random grants, reads answered ``lat`` cycles later."""
        pending = []            # (cycle due, port data signal, value)
        cycle = 0
        reads = [(dut.spad_rd, mem0, "spad", 8), (dut.acc_rd, mem0, "acc", 32), (dut.add_rd, mem1, "acc", 32)]
        writes = [(dut.wr0, mem1, "spad", 8), (dut.wr1, mem1, "acc", 32), (dut.add_wr, mem1, "acc", 32)]
        while True:
            for port, *_ in reads + writes:
                ctx.set(port.gnt, int(rng.random() < p_gnt))
            for due, sig, value in [p for p in pending if p[0] == cycle]:
                ctx.set(sig, value)
            pending = [p for p in pending if p[0] > cycle]
            for port, mem, name, bits in reads:
                if ctx.get(port.en) and ctx.get(port.gnt):
                    pending.append((cycle + lat, port.data, _row_int(mem[name][ctx.get(port.addr)], bits)))
            for port, mem, name, bits in writes:
                if ctx.get(port.en) and ctx.get(port.gnt):
                    mem[name][ctx.get(port.addr)] = _int_row(ctx.get(port.data), bits, CFG.dim,
                                                             mem[name].dtype)
            if ctx.get(dut.event_valid):
                events.append((ctx.get(dut.event_index), ctx.get(dut.event_value)))
            if ctx.get(dut.rx_error_valid):
                errors.append(ctx.get(dut.rx_error))
            await ctx.tick()
            cycle += 1

    async def commands(ctx):
        ctx.set(dut.timeout, 40)
        layout = data.Layout.cast(PeerCmd)
        for f in cmds:
            ctx.set(dut.ctl.cmd.payload.as_value(), layout.const(f).as_value().value)
            ctx.set(dut.ctl.cmd.valid, 1)
            await ctx.tick().until(dut.ctl.cmd.ready)
            ctx.set(dut.ctl.cmd.valid, 0)
            (err,) = await ctx.tick().sample(dut.ctl.error).until(dut.ctl.done)
            results.append(HwError(err).value)
        # the wire goes down: the sender times out and discards, the command ends
        ctx.set(dut.down, 1)
        ctx.set(dut.ctl.cmd.payload.as_value(), layout.const(dict(rows=20, acc=1, dest=1)).as_value().value)
        ctx.set(dut.ctl.cmd.valid, 1)
        await ctx.tick().until(dut.ctl.cmd.ready)
        ctx.set(dut.ctl.cmd.valid, 0)
        (err,) = await ctx.tick().sample(dut.ctl.error).until(dut.ctl.done)
        results.append(HwError(err).value)
        await ctx.tick().repeat(30)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(memories, background=True)
    sim.add_testbench(commands)
    sim.run()
    assert len(results) == len(cmds) + 1, f"only {len(results)} of {len(cmds) + 1} commands ended"
    want, want_events = [], []
    b.on_event = lambda e, v: want_events.append((e, v))
    for f in cmds:
        want.append(int(a.submit(encode(Opcode.DMA_PEER, **f))))
    want.append(int(ErrorCode.LINK_TIMEOUT))
    assert results == want, f"SEED={seed}: error codes {results}, golden {want}"
    assert np.array_equal(mem1["spad"], b.spad), f"SEED={seed}: chip 1's scratchpad differs"
    assert np.array_equal(mem1["acc"], b.acc), f"SEED={seed}: chip 1's accumulator differs"
    assert events == want_events, f"SEED={seed}: events {events}, golden {want_events}"
    assert errors == [], f"SEED={seed}: receiver errors {errors}"


def test_peer_path_rate():
    """Cycles of a DMA_PEER from its command to its done, nothing denied, against the cost model
    (compiler/cost.py peer_cycles): the link carries a beat a cycle (depth 5 >= round trip 5);
    adds take the receiver's read-modify-write time per row (the sender finishes first: the
    rows wait in the link's buffer, holding credits)."""
    from compiler.cost import peer_cycles
    dut = PeerPath(CFG)
    layout = data.Layout.cast(PeerCmd)
    lat = CFG.mem_read_latency
    cases = [dict(rows=48, dest=1), dict(rows=24, acc=1, dest=1), dict(rows=8, acc=1, add=1, dest=1)]
    took, events = [], []

    async def memories(ctx):
        pending, cycle = [], 0
        ports = [dut.spad_rd, dut.acc_rd, dut.add_rd]
        for p in [*ports, dut.wr0, dut.wr1, dut.add_wr]:
            ctx.set(p.gnt, 1)
        while True:
            for due, sig in [p for p in pending if p[0] == cycle]:
                ctx.set(sig, 0)
            pending = [p for p in pending if p[0] > cycle]
            for p in ports:
                if ctx.get(p.en):
                    pending.append((cycle + lat, p.data))
            await ctx.tick()
            cycle += 1

    async def commands(ctx):
        ctx.set(dut.timeout, 1000)
        for f in cases:
            ctx.set(dut.ctl.cmd.payload.as_value(), layout.const({**f, "signal": 1}).as_value().value)
            ctx.set(dut.ctl.cmd.valid, 1)
            await ctx.tick().until(dut.ctl.cmd.ready)
            ctx.set(dut.ctl.cmd.valid, 0)
            n = 0
            while not ctx.get(dut.ctl.done):
                await ctx.tick()
                n += 1
            took.append(n)
            m = 0
            while not ctx.get(dut.event_valid):         # the receiver's last row, then its event
                await ctx.tick()
                m += 1
            events.append(m)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(memories, background=True)
    sim.add_testbench(commands)
    sim.run()
    caps = CAPS
    for f, n, m in zip(cases, took, events):
        model = peer_cycles(f["rows"], f.get("acc", 0), caps)
        print(f"DMA_PEER {f}: {n} cycles to done (model {model}), event {m} cycles later")
        if not f.get("add"):
            assert abs(n - model) <= 2, (f, n, model)
    # the add: about one row per read-modify-write at the receiver
    assert events[2] <= 8 * (lat + 3) + 2 * 5 + 10, events
