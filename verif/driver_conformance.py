"""Backend conformance tests of the driver API: the same async test bodies run on every backend.

``tests/test_driver.py`` runs them on the golden backend (asyncio), ``cocotb_tests/cocotb_driver.py``
on the RTL chip (cocotb). A third backend passes when every function of :data:`TESTS` returns.

Each test is ``async def test_x(ctx)`` where ``ctx`` is a :class:`Context`: it opens the device
(``await ctx.open()``; firmware booted), runs coroutines concurrently (``await ctx.gather(*coros)``:
``asyncio.gather`` on golden, cocotb tasks on RTL) and carries the test's seed. Plain ``assert``
statements; no pytest or cocotb import here.
"""
from dataclasses import dataclass, field

import numpy as np

from spec import registers as R
from spec.commands import encode
from spec.descriptors import ErrorCode, Opcode
from driver.device import Device
from driver.errors import DeviceError, DeviceTimeout, DriverMisuse, QueueError
from driver.program import BufferSpec, Program, ProgramCommand, Reloc

__all__ = ["Context", "TESTS"]


@dataclass
class Context:
    """What a backend provides to the conformance tests."""
    backend: object
    firmware: object                 #: FirmwareImage or ELF path
    gather: object                   #: async gather(*coroutines) -> list of results
    #: blackhole((base, limit)): host memory stops answering in that range (None: answers again);
    #: a hook of the backend's memory model, for test_bus_timeout_and_recovery
    blackhole: object = None
    seed: int = 1
    host_base: int = 0x1000
    host_bytes: int = 0x40000
    log: object = print
    booted: dict = field(default_factory=dict)

    async def open(self):
        """A Device on the backend; the firmware is loaded on the first open only."""
        fw = None if self.booted.get("fw") else self.firmware
        dev = await Device.open(self.backend, host_base=self.host_base, host_bytes=self.host_bytes,
                                firmware=fw)
        self.booted["fw"] = True
        return dev

    def rng(self, offset):
        return np.random.default_rng(self.seed + offset)


async def expect(exc, aw_or_fn, match):
    """Assert that awaiting (or calling) ``aw_or_fn`` raises ``exc`` whose message contains ``match``."""
    try:
        r = aw_or_fn() if callable(aw_or_fn) else aw_or_fn
        if hasattr(r, "__await__"):
            await r
    except exc as e:
        assert match in str(e), f"{exc.__name__} message {str(e)!r} lacks {match!r}"
        return e
    raise AssertionError(f"expected {exc.__name__} ({match!r}), nothing raised")


# ========================================================================== programs used
def gemm_program(dim, m, b_init):
    """C (int32 m x dim) = A (int8 m x dim) @ B (int8 dim x dim, a const buffer) over two queues:
    queue 0 loads A and B and signals event 0; queue 1 waits for it, runs the GEMM and stores C."""
    p = Program("gemm_two_queues", events=1)
    p.add_buffer(BufferSpec("a", m * dim, role="input"))
    p.add_buffer(BufferSpec("b", dim * dim, role="const", init=b_init))
    p.add_buffer(BufferSpec("c", m * dim * 4, role="output"))
    a_row, b_row = 0, 64
    p.add(ProgramCommand(0, Opcode.DMA_LOAD, dict(host_row_stride=dim, row_bytes=dim, rows=m, planes=1,
                                                  local_addr=a_row, local_row_stride=1),
                         (Reloc("host_addr", "a"),), note="load A"))
    p.add(ProgramCommand(0, Opcode.DMA_LOAD, dict(host_row_stride=dim, row_bytes=dim, rows=dim, planes=1,
                                                  local_addr=b_row, local_row_stride=1),
                         (Reloc("host_addr", "b"),), tag=1, note="load B"))
    p.add(ProgramCommand(0, Opcode.SIGNAL_EVENT, dict(event=0, value=1), tag=2, note="A, B loaded"))
    p.add(ProgramCommand(1, Opcode.WAIT_EVENT, dict(event=0, value=1), tag=3, note="wait A, B"))
    p.add(ProgramCommand(1, Opcode.GEMM, dict(a_addr=a_row, b_addr=b_row, c_addr=0, m=m, k_tiles=1,
                                              n_tiles=1), tag=4, note="C = A @ B"))
    p.add(ProgramCommand(1, Opcode.BARRIER, {}, tag=5))
    p.add(ProgramCommand(1, Opcode.DMA_STORE, dict(host_row_stride=4 * dim, row_bytes=4 * dim, rows=m,
                                                   planes=1, local_addr=0, local_row_stride=1, acc=1),
                         (Reloc("host_addr", "c"),), tag=6, note="store C"))
    return p


def copy_descriptors(dim, src, dst, rows, spad_row, tag=0):
    """DMA host ``src`` -> spad rows -> host ``dst`` (``rows`` x ``dim`` bytes), barrier between."""
    common = dict(host_row_stride=dim, row_bytes=dim, rows=rows, planes=1, local_addr=spad_row,
                  local_row_stride=1)
    return [encode(Opcode.DMA_LOAD, tag=tag, host_addr=src, **common),
            encode(Opcode.BARRIER, tag=tag + 1),
            encode(Opcode.DMA_STORE, tag=tag + 2, host_addr=dst, **common)]


# ========================================================================== tests
async def test_open_capabilities_firmware(ctx):
    dev = await ctx.open()
    caps = dev.caps
    assert caps.dim in (4, 8, 16) and dev.num_queues == 4 and dev.num_events == 16, (caps, dev.num_queues)
    assert caps.version == (R.VERSION.MAJOR.reset, R.VERSION.MINOR.reset), caps.version
    assert R.FW_STATUS.STATE.get(await ctx.backend.read(R.FW_STATUS)) == 2   # READY

    class WrongId:
        def __init__(self, b):
            self.b = b

        async def read(self, reg):
            return 0xDEADBEEF if reg is R.ID else await self.b.read(reg)

    await expect(DeviceError, Device.open(WrongId(ctx.backend), host_base=ctx.host_base,
                                          host_bytes=ctx.host_bytes), "0xdeadbeef")


async def test_buffers_roundtrip(ctx):
    dev = await ctx.open()
    rng = ctx.rng(1)
    bufs = []
    for dtype, shape in ((np.int8, (7, 13)), (np.int32, (5, 8)), (np.float32, (3, 3)), (np.uint16, (33,))):
        a = (rng.standard_normal(shape) * 1000).astype(dtype)
        buf = dev.alloc(a.nbytes + 16, align=256)
        assert buf.addr % 256 == 0 and ctx.host_base <= buf.addr < ctx.host_base + ctx.host_bytes
        await buf.write(a, offset=16)
        got = await buf.read(dtype, shape, offset=16)
        assert got.dtype == np.dtype(dtype) and np.array_equal(got, a), (dtype, shape)
        bufs.append(buf)
    await bufs[0].write(b"\x01\x02\x03")
    assert bytes(await bufs[0].read(np.uint8, 3)) == b"\x01\x02\x03"
    addrs = [b.addr for b in bufs]
    assert len(set(addrs)) == len(addrs)
    spans = sorted((b.addr, b.addr + b.nbytes) for b in bufs)
    assert all(e <= s for (_, e), (s, _) in zip(spans, spans[1:])), spans
    free_before = dev.allocator.free_bytes
    for b in bufs:
        b.free()
    assert dev.allocator.free_bytes > free_before
    await dev.close()
    assert dev.allocator.free_bytes == ctx.host_bytes, dev.allocator.free_bytes


async def test_program_twice_different_buffers(ctx):
    dev = await ctx.open()
    d = dev.caps.dim
    rng = ctx.rng(2)
    b = rng.integers(-128, 128, (d, d), dtype=np.int8)
    prog = gemm_program(d, d, b.tobytes())
    for run in range(2):
        a = rng.integers(-128, 128, (d, d), dtype=np.int8)
        abuf = await dev.upload(a)
        cbuf = dev.alloc(d * d * 4)
        await cbuf.write(np.full(d * d, -1, np.int32))
        irqs = dev.interrupts
        # the second run also maps the program's queues 0, 1 to device queues 3, 2
        queues = {0: await dev.queue(3), 1: await dev.queue(2)} if run else None
        records = await dev.run(prog, {"a": abuf, "c": cbuf}, queues=queues)
        assert dev.interrupts > irqs, "completion did not come through the interrupt line"
        assert sorted(records) == [0, 1] and len(records[0]) == 3 and len(records[1]) == 4, records
        assert all(r["status"] == 0 for rs in records.values() for r in rs), records
        assert [r["tag"] for r in records[1]] == [3, 4, 5, 6], records[1]
        got = await cbuf.read(np.int32, (d, d))
        want = a.astype(np.int32) @ b.astype(np.int32)
        assert np.array_equal(got, want), f"run {run}: C differs at {np.argwhere(got != want)[:4].tolist()}"
        abuf.free()
        cbuf.free()
    free = dev.allocator.free_bytes
    # missing input, too small a buffer, unknown buffer name
    await expect(DriverMisuse, dev.run(prog, {"c": dev.alloc(d * d * 4)}), "input buffer 'a' is not given")
    small = dev.alloc(8)
    await expect(DriverMisuse, dev.run(prog, {"a": small, "c": small}), "buffer 'a' has 8 bytes")
    assert dev.allocator.free_bytes == free - d * d * 4 - 8, "run() leaked its const buffer"
    pad = dev.alloc(8, align=8)
    odd = dev.alloc(d * d, align=8)
    odd = odd if odd.addr % 64 else pad
    await expect(DriverMisuse, dev.run(prog, {"a": odd, "c": dev.alloc(d * d * 4)}),
                 f"bound at {odd.addr:#x}, not 64-byte aligned")
    q = await dev.queue(0)
    a2, c2 = dev.alloc(d * d), dev.alloc(d * d * 4)
    await expect(DriverMisuse, dev.run(prog, {"a": a2, "c": c2}, queues={0: q, 1: q}),
                 "must map to distinct device queues")
    await expect(DriverMisuse, dev.run(prog, {"a": abuf}), "not a live Buffer")
    await expect(DriverMisuse, dev.run(prog, {"a": small, "c": cbuf, "x": small}), "no buffer 'x'")


async def test_ring_wrap_backpressure(ctx):
    dev = await ctx.open()
    q = await dev.queue(1, entries=4)
    n = 19
    sub = await q.submit([encode(Opcode.NOP, tag=k) for k in range(n)])
    recs = await sub.wait(200_000)
    assert [r["index"] for r in recs] == list(range(n)), recs
    assert [r["tag"] for r in recs] == list(range(n)) and all(r["queue"] == 1 for r in recs)
    # DMA copies through the same small ring: data arrives
    d = dev.caps.dim
    rng = ctx.rng(3)
    srcs, dsts, datas, descs = [], [], [], []
    for k in range(4):
        data = rng.integers(0, 256, (2, d), dtype=np.uint8)
        srcs.append(await dev.upload(data))
        dsts.append(dev.alloc(2 * d))
        datas.append(data)
        descs += copy_descriptors(d, srcs[-1].addr, dsts[-1].addr, 2, 16 + 2 * k, tag=10 * k)
    sub = await q.submit(descs)
    recs = await sub.wait(400_000)
    assert [r["index"] for r in recs] == list(range(n, n + len(descs)))
    for k in range(4):
        assert np.array_equal(await dsts[k].read(np.uint8, (2, d)), datas[k]), k
    assert await q.consumer() == q.producer == n + len(descs)


async def test_queues_concurrently(ctx):
    dev = await ctx.open()
    d = dev.caps.dim
    rng = ctx.rng(4)
    queues = [await dev.queue(i, entries=8) for i in range(3)]

    async def job(k, q):
        outs = []
        for j in range(3):
            data = rng.integers(0, 256, (4, d), dtype=np.uint8)
            src = await dev.upload(data)
            dst = dev.alloc(4 * d)
            # rows of its own per copy: nothing orders a copy's store before the next one's load
            # (different DMA channels), so reused rows would race
            sub = await q.submit(copy_descriptors(d, src.addr, dst.addr, 4, 128 + 32 * k + 8 * j,
                                                  tag=16 * j))
            outs.append((sub, dst, data))
        for sub, dst, data in reversed(outs):        # the newest first: older ones still pending
            recs = await sub.wait(400_000)
            assert all(r["queue"] == q.index and r["status"] == 0 for r in recs), recs
            assert np.array_equal(await dst.read(np.uint8, (4, d)), data), (k, sub)
        return sum(len(s.queue.records) for s, _, _ in outs)

    left = await ctx.gather(*(job(k, q) for k, q in enumerate(queues)))
    assert left == [0, 0, 0], left
    for q in queues:
        await q.wait_idle(10_000)


async def test_misuse_errors(ctx):
    dev = await ctx.open()
    E = DriverMisuse
    await expect(E, lambda: dev.alloc(0), "positive int, not 0")
    await expect(E, lambda: dev.alloc(16, align=3), "power of two, not 3")
    await expect(E, lambda: dev.alloc(ctx.host_bytes + 1), f"no {ctx.host_bytes + 1} bytes")
    buf = dev.alloc(64)
    await expect(E, buf.write(bytes(65)), "write of 65 bytes at offset 0")
    await expect(E, buf.write(bytes(8), offset=60), "offset 60")
    await expect(E, buf.read(np.int32, (17,)), "read of 68 bytes")
    buf.free()
    await expect(E, lambda: buf.free(), f"double free of buffer at {buf.addr:#x}")
    await expect(E, buf.read(np.uint8, 4), "freed buffer")
    await expect(E, lambda: dev.allocator.free(buf.addr), f"{buf.addr:#x}: not allocated")
    await expect(E, dev.queue(4), "queue index 4 outside 0..3")
    await expect(E, dev.queue(0, entries=6), "not 6")
    q = await dev.queue(0, entries=4)
    await expect(E, dev.queue(0, entries=8), "open with 4 entries, not 8")
    await expect(E, q.submit([]), "empty descriptor list")
    await expect(E, q.submit([[0] * 7]), "descriptor 0 must be 8 words")
    await expect(E, q.submit([[0] * 7 + [1 << 32]]), "4294967296")
    for i in range(1, 4):
        await dev.queue(i)
    await expect(E, dev.queue(), "all 4 queues are open")
    events = [await dev.event() for _ in range(dev.num_events)]
    await expect(E, dev.event(), "all 16 device event counters")
    await expect(E, events[0].signal_on(q, -1), "not -1")
    events[0].free()
    await expect(E, lambda: events[0].free(), "double free of event 0")
    await expect(E, events[0].wait(1), "freed event 0")
    for e in events[1:]:
        e.free()
    sub = await q.submit([encode(Opcode.NOP)])
    assert await sub.wait(100_000) == await sub.wait()          # a second wait returns the same
    lost = await q.submit([encode(Opcode.NOP)])
    await q.wait_idle(100_000)
    await expect(E, lost.wait(), f"records of descriptor {lost.first} of queue 0 were discarded")
    void = await q.submit([encode(Opcode.NOP)])
    await q.reset()
    await expect(E, void.wait(), "discarded by a queue reset")
    await q.close()
    await expect(E, q.submit([encode(Opcode.NOP)]), "closed queue 0")
    await dev.close()


async def test_device_error_and_recovery(ctx):
    dev = await ctx.open()
    d = dev.caps.dim
    q = await dev.queue(2, entries=8)
    other = await dev.queue(3, entries=8)
    buf = dev.alloc(4 * d)
    outside = ctx.host_base + ctx.host_bytes + 0x1000       # outside the queue's DMA window
    bad_dma = encode(Opcode.DMA_LOAD, tag=7, host_addr=outside, host_row_stride=d, row_bytes=d,
                     rows=1, planes=1, local_addr=0, local_row_stride=1)
    sub = await q.submit([encode(Opcode.NOP, tag=1), bad_dma, encode(Opcode.NOP, tag=2)])
    ok = await other.submit(copy_descriptors(d, buf.addr, buf.addr, 4, 32))
    err = await expect(QueueError, sub.wait(200_000), "WINDOW at descriptor index 1")
    assert (err.queue, err.code, err.index) == (2, ErrorCode.WINDOW, 1), (err.queue, err.code, err.index)
    assert err.record is not None and err.record["tag"] == 7 and err.record["status"] == ErrorCode.WINDOW
    assert len(await ok.wait(200_000)) == 3                   # the other queue is unaffected
    await expect(QueueError, q.submit([encode(Opcode.NOP)]), "halted with WINDOW")
    await q.reset()
    bad_opcode = [0x0003_0000 | (max(Opcode) + 1)] + [0] * 7   # an opcode nothing serves, tag 3
    sub = await q.submit([encode(Opcode.NOP), bad_opcode])
    err = await expect(QueueError, sub.wait(200_000), "BAD_OPCODE at descriptor index 1")
    assert err.code == ErrorCode.BAD_OPCODE and err.record["tag"] == 3
    await q.reset()
    recs = await (await q.submit([encode(Opcode.NOP, tag=k) for k in range(10)])).wait(200_000)
    assert [r["index"] for r in recs] == list(range(10)), recs
    await dev.close()


async def test_bus_timeout_and_recovery(ctx):
    """Host memory that stops answering (the backend's black hole over one buffer): a DMA from it
    fails with BUS_TIMEOUT after BUS_TIMEOUT.CYCLES, which the waiter sees precisely; another
    queue's copy completes meanwhile, bit-exactly; the memory answering again, a queue reset
    recovers the queue."""
    assert ctx.blackhole is not None, "this backend's Context has no black hole hook"
    dev = await ctx.open()
    d = dev.caps.dim
    q, other = await dev.queue(1, entries=8), await dev.queue(0, entries=8)
    hole, src, dst = dev.alloc(4 * d), dev.alloc(4 * d), dev.alloc(4 * d)
    data = ctx.rng(11).integers(0, 256, 4 * d, dtype=np.uint8)
    await src.write(data)
    await expect(DriverMisuse, dev.set_bus_timeout(-1), "bus timeout -1")
    old = await dev.set_bus_timeout(3000)
    assert old == R.BUS_TIMEOUT.CYCLES.reset, old
    ctx.blackhole((hole.addr, hole.addr + hole.nbytes))
    bad = encode(Opcode.DMA_LOAD, tag=5, host_addr=hole.addr, host_row_stride=d, row_bytes=d,
                 rows=4, planes=1, local_addr=0, local_row_stride=1)
    sub = await q.submit([encode(Opcode.NOP, tag=1), bad, encode(Opcode.NOP, tag=2)])
    ok = await other.submit(copy_descriptors(d, src.addr, dst.addr, 4, 32))
    err = await expect(QueueError, sub.wait(200_000), "BUS_TIMEOUT at descriptor index 1")
    assert (err.queue, err.code, err.index) == (1, ErrorCode.BUS_TIMEOUT, 1), (err.queue, err.code, err.index)
    assert err.record["tag"] == 5 and err.record["status"] == ErrorCode.BUS_TIMEOUT, err.record
    assert len(await ok.wait(200_000)) == 3
    assert (await dst.read() == data).all(), "the other queue's copy"
    ctx.blackhole(None)
    await q.reset()
    recs = await (await q.submit(copy_descriptors(d, hole.addr, dst.addr, 4, 40))).wait(200_000)
    assert [r["status"] for r in recs] == [ErrorCode.OK] * 3, recs
    assert (await dst.read() == await hole.read()).all(), "a copy from the memory that answers again"
    assert await dev.set_bus_timeout(old) == 3000
    await dev.close()


async def test_events_and_timeout(ctx):
    dev = await ctx.open()
    q0, q1 = await dev.queue(0), await dev.queue(1)
    ev = await dev.event()
    start = await ev.value()
    v1 = ev.next_value()
    waiter = await ev.wait_on(q1, v1)
    after = await q1.submit([encode(Opcode.NOP, tag=9)])
    await dev.backend.wait(2_000)
    assert (await q1.status())["WAITING"] == 1 and await q1.consumer() == 0
    await ev.signal_on(q0, v1)
    assert await ev.wait(v1, 100_000) == (start + 1) & 0xFFFF_FFFF
    assert (await waiter.wait(100_000))[0]["opcode"] == Opcode.WAIT_EVENT
    assert (await after.wait(100_000))[0]["tag"] == 9
    # a submission blocked on an event times out, and completes once the event is signalled
    v2 = ev.next_value()
    await ev.wait_on(q1, v2)
    blocked = await q1.submit([encode(Opcode.NOP, tag=10)])
    e = await expect(DeviceTimeout, blocked.wait(timeout_cycles=4_000),
                     f"descriptors {blocked.first}..{blocked.first} of queue 1")
    assert e.cycles >= 4_000 and "queue 1: " in e.state, e
    # the hang report names the blocking wait and that no queued SIGNAL can release it
    assert f"waits on EVENT{ev.index} >= {v2}" in e.state and "no queued SIGNAL_EVENT" in e.state, e
    await ev.signal_on(q0, v2)
    assert (await blocked.wait(100_000))[0]["tag"] == 10
    e = await expect(DeviceTimeout, ev.wait(ev.next_value(5), timeout_cycles=3_000),
                     f"event {ev.index} to reach {(start + 7) & 0xFFFF_FFFF}")
    assert e.cycles >= 3_000 and "queue 0: " in e.state and "hang report at TIMESTAMP=" in e.state
    pc = int(e.state.split("control core pc=")[1].split(";")[0].split()[0], 16)
    assert 0 < pc < 0x4000, f"the control core's pc {pc:#x} is not in IMEM"
    ev.free()
    await dev.close()


async def test_random_traffic(ctx):
    """Random copy jobs and NOP bursts on random queues with random (small) rings, all queues in
    flight at once; some submissions without an interrupt. Checks every byte and record."""
    dev = await ctx.open()
    d = dev.caps.dim
    rng = ctx.rng(5)
    qids = sorted(rng.choice(4, int(rng.integers(2, 5)), replace=False).tolist())
    queues = [await dev.queue(i, entries=int(2 ** rng.integers(1, 5))) for i in qids]
    ctx.log(f"random traffic: queues {[(q.index, q.entries) for q in queues]}")

    async def traffic(k, q):
        pending = []
        for j in range(int(rng.integers(2, 6))):
            if rng.random() < 0.3:
                n = int(rng.integers(1, 3 * q.entries))
                sub = await q.submit([encode(Opcode.NOP, tag=j) for _ in range(n)],
                                     irq_last=bool(rng.random() < 0.5))
                pending.append((sub, None, None))
                continue
            rows = int(rng.integers(1, 5))
            data = rng.integers(0, 256, (rows, d), dtype=np.uint8)
            src, dst = await dev.upload(data), dev.alloc(rows * d)
            # rows of its own per copy (a copy's store and the next one's load are not ordered)
            sub = await q.submit(copy_descriptors(d, src.addr, dst.addr, rows, 192 + 64 * k + 8 * j,
                                                  tag=j),
                                 irq_last=bool(rng.random() < 0.7))
            pending.append((sub, dst, data))
        for sub, dst, data in pending:
            recs = await sub.wait(1_000_000)
            assert [r["index"] for r in recs] == [(sub.first + i) & 0xFFFF_FFFF for i in range(sub.count)]
            assert all(r["status"] == 0 and r["queue"] == q.index for r in recs), recs
            if dst is not None:
                got = await dst.read(np.uint8, data.shape)
                assert np.array_equal(got, data), f"queue {q.index}: copy to {dst} differs"
        return len(pending)

    await ctx.gather(*(traffic(k, q) for k, q in enumerate(queues)))
    await dev.close()


TESTS = [test_open_capabilities_firmware, test_buffers_roundtrip, test_program_twice_different_buffers,
         test_ring_wrap_backpressure, test_queues_concurrently, test_misuse_errors,
         test_device_error_and_recovery, test_bus_timeout_and_recovery, test_events_and_timeout,
         test_random_traffic]
