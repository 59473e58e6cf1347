"""cocotb side of test_cluster: two chips in a ring (hdl_gen/cluster.py), DMA_PEER from chip 0 to
chip 1, every result checked against the golden device models joined the same way
(golden/device_model.py ``peer``) and NumPy.

Each chip is driven through its own CSR port and host memory by the single-chip testbench
(:class:`verif.chip_tb.ChipTB` over :class:`verif.cluster_target.ChipView`): data reaches a
chip's memories by DMA_LOAD from its host memory and leaves by DMA_STORE, as in the chip tests.
"""
import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from golden.device_model import DeviceModel
from spec import registers as R
from spec.chip import EVENTS
from spec.commands import encode
from spec.descriptors import PEER_FIELDS, ErrorCode, Opcode
from spec.firmware_image import FirmwareImage
from verif.chip_tb import ChipTB, CommandFailed
from verif.cluster_target import ChipView
from verif.control_path import DirectedQueues

HOST_IN, HOST_OUT = 0x1_0000, 0x8_0000


async def _cluster(dut, n=2):
    """Reset the cluster; one ChipTB per chip (all share the reset); links healthy."""
    tbs = [ChipTB(ChipView(dut, i)) for i in range(n)]
    for i in range(n):
        getattr(dut, f"l{i}_fault_down").value = 0
        getattr(dut, f"l{i}_fault_flip").value = 0
    await tbs[0].reset()
    for tb in tbs[1:]:
        tb.caps = await tb.capabilities()
        tb._submitted = dict(tbs[0]._submitted)
        tb._retired = dict(tbs[0]._retired)
    for tb in tbs:
        await tb.enable_irqs()
    tbs[0].log.info(f"cluster of {n} chips, SEED={tbs[0].seed}")
    return tbs


def _models(tbs):
    """Golden device models of the chips, each linked to the next (the ring)."""
    ms = [DeviceModel(tbs[0].caps, host_bytes=0x10_0000, chip_id=i) for i in range(len(tbs))]
    for i, mdl in enumerate(ms):
        mdl.peer = ms[(i + 1) % len(ms)]
    return ms


async def _run(tb, model, words):
    """Submit one descriptor directly (core held) and wait for it; the model runs it too.
    Returns the chip's error code (OK or the one the model must agree with)."""
    await tb.submit(words)
    try:
        await tb.wait_irq(200_000, f"opcode {words[0] & 0xFF}")
        got = ErrorCode.OK
    except CommandFailed as e:
        got = ErrorCode(e.code)
    want = model.submit(words)
    assert got == want, f"opcode {words[0] & 0xFF}: chip says {got.name}, golden model {want.name}"
    return got


def _row_bytes(caps, acc):
    return caps.dim * (4 if acc else 1)


async def _load(tb, model, rng, acc, addr, rows):
    """Random rows into local memory ``acc`` of a chip (and its model) through its host memory."""
    rb = _row_bytes(tb.caps, acc)
    data = rng.integers(0, 256, rows * rb, dtype=np.uint8).tobytes()
    await tb.host.load(HOST_IN, data)
    model.host[HOST_IN:HOST_IN + len(data)] = np.frombuffer(data, np.uint8)
    await _run(tb, model, encode(Opcode.DMA_LOAD, irq=True, host_addr=HOST_IN, host_row_stride=rb,
                                 local_addr=addr, local_row_stride=1, row_bytes=rb, rows=rows,
                                 planes=1, acc=int(acc)))


async def _check_rows(tb, model, acc, addr, rows, what):
    """Store rows of a chip's memory to its host memory; compare with its golden model."""
    rb = _row_bytes(tb.caps, acc)
    await _run(tb, model, encode(Opcode.DMA_STORE, irq=True, host_addr=HOST_OUT, host_row_stride=rb,
                                 local_addr=addr, local_row_stride=1, row_bytes=rb, rows=rows,
                                 planes=1, acc=int(acc)))
    got = np.frombuffer(await tb.host.read(HOST_OUT, rows * rb), np.uint8)
    mem = model.acc if acc else model.spad
    want = mem[addr:addr + rows].view(np.uint8).ravel()
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{what}: {bad.size} of {got.size} bytes differ, first at byte {bad[0]}"


async def link_state(tb):
    """The link registers of a chip, for failure messages."""
    st = R.LINK_STATUS.decode(await tb.read(R.LINK_STATUS))
    counts = {reg.name: await tb.read(reg) for reg in (R.LINK_RX_ERRORS, R.LINK_RX_ROWS, R.LINK_RX_EVENTS)}
    return f"LINK_STATUS {st} {counts}"


async def _wait_reg(tb, reg, value, cycles=20_000, what="", others=()):
    for _ in range(cycles // 50):
        if await tb.read(reg) == value:
            return
        await ClockCycles(tb.dut.clk, 50)
    states = [await link_state(t) for t in (tb, *others)]
    raise AssertionError(f"{what}: {reg.name} = {await tb.read(reg)}, not {value} after {cycles} "
                         f"cycles; {states}")


def _peer(rows, local, peer_addr, acc, dest=1, event=None, value=0, irq=True, add=False):
    sig = {} if event is None else {"signal": 1, "event": event, "value": value}
    return encode(Opcode.DMA_PEER, irq=irq, local_addr=local, peer_addr=peer_addr, rows=rows,
                  acc=int(acc), add=int(add), dest=dest, **sig)


@cocotb.test()
async def peer_writes(dut):
    """Random DMA_PEERs from chip 0 into chip 1's scratchpad and accumulator, written or added
    (sizes 1 .. 5 x
    the link's credits and more, any rows), each result read back from chip 1 and compared with
    the golden pair; the sender's errors (range, shape, reserved bits, event, wrong chip at the
    receiver) are precise and change nothing."""
    tbs = await _cluster(dut)
    t0, t1 = tbs
    m0, m1 = _models(tbs)
    rng = np.random.default_rng(t0.seed)
    caps = t0.caps
    for name, tb in (("chip 0", t0), ("chip 1", t1)):
        st = R.LINK_STATUS.decode(await tb.read(R.LINK_STATUS))
        assert st["PRESENT"] == 1 and st["FAILED"] == 0, f"{name}: LINK_STATUS {st}"
    assert R.LINK_STATUS.decode(await t1.read(R.LINK_STATUS))["CHIP_ID"] == 1
    rows_in = 0
    for k in range(int(os.environ.get("KAKI_PEER_TRANSFERS", "9"))):
        acc, add = k % 3 != 0, k % 3 == 2        # scratchpad, accumulator, accumulator added
        limit = caps.acc_rows if acc else caps.spad_rows
        n = int(rng.integers(1, min(40, limit)))
        local = int(rng.integers(0, limit - n + 1))
        dst = int(rng.integers(0, limit - n + 1))
        await _load(t0, m0, rng, acc, local, n)
        if add:                 # known contents in chip 1's rows to add into
            await _load(t1, m1, rng, acc, dst, n)
        kind = "acc rows added" if add else "acc rows" if acc else "spad rows"
        t0.log.info(f"transfer {k}: {n} {kind} {local} -> chip 1 row {dst}")
        cycles0 = await t0.read(R.TIMESTAMP)
        assert await _run(t0, m0, _peer(n, local, dst, acc, add=add)) == ErrorCode.OK
        cycles = await t0.read(R.TIMESTAMP) - cycles0
        rows_in += n
        await _wait_reg(t1, R.LINK_RX_ROWS, rows_in, what=f"transfer {k}", others=(t0,))
        t0.log.info(f"transfer {k}: {cycles} cycles submit to irq seen")
        await _check_rows(t1, m1, acc, dst, n, f"transfer {k}")
    # errors at the sender: nothing sent
    last = caps.spad_rows
    bad = [(_peer(4, last - 2, 0, False), ErrorCode.LOCAL_RANGE),
           (_peer(4, 0, last - 1, False), ErrorCode.LOCAL_RANGE),
           (_peer(0, 0, 0, False), ErrorCode.BAD_SHAPE),
           (_peer(2, 0, 0, False, event=EVENTS, value=1), ErrorCode.BAD_EVENT)]
    words = _peer(2, 0, 0, False)
    pos = PEER_FIELDS["reserved0"][0]
    words[pos // 32] |= 1 << pos % 32
    bad.append((words, ErrorCode.RESERVED_BITS))
    for words, code in bad:
        assert await _run(t0, m0, words) == code
    assert await t1.read(R.LINK_RX_ROWS) == rows_in, "a refused command sent rows"
    # the wrong chip: sent, refused whole by chip 1's receiver (BAD_DEST), nothing written
    assert await _run(t0, m0, _peer(3, 0, 0, False, dest=0)) == ErrorCode.OK
    await _wait_reg(t1, R.LINK_RX_ERRORS, 1, what="BAD_DEST")
    st = R.LINK_STATUS.decode(await t1.read(R.LINK_STATUS))
    assert st["RX_ERROR"] == 2 and await t1.read(R.LINK_RX_ROWS) == rows_in, st
    assert m1.rx_errors == [2]
    await _check_rows(t1, m1, False, 0, caps.spad_rows, "whole scratchpad of chip 1")
    await _check_rows(t1, m1, True, 0, caps.acc_rows, "whole accumulator of chip 1")


@cocotb.test()
async def peer_event_releases_a_queue(dut):
    """Chip 1 runs its firmware and queues: queue 0 waits on event 3 and then stores what chip 0
    sends; chip 0's DMA_PEER with signal sets it (after the rows), the queue goes on and the data
    it stores equals the golden model's. A second transfer adds its rows and signals the next
    value; meanwhile queue 1 of chip 1 keeps working on its own."""
    t0, t1 = await _cluster(dut)
    m0, m1 = _models((t0, t1))
    rng = np.random.default_rng(t0.seed)
    events = {}
    m1.on_event = events.__setitem__
    image = FirmwareImage.from_elf(os.environ["KAKI_FW_ELF"])
    await t1.load_firmware(image, timeout_cycles=200_000)
    dq = DirectedQueues(t1)
    for q in (0, 1):
        await dq.setup(q)
    caps = t0.caps
    rb = caps.dim * 4
    wb, _ = dq.window(0)
    # round 0 writes rows, round 1 adds into the same rows (whose contents are then known)
    n = int(rng.integers(1, 24))
    dst = int(rng.integers(0, caps.acc_rows - n + 1))
    for rnd, value in enumerate((7, 8)):
        out = wb + 0x1000 * rnd
        await dq.submit(0, encode(Opcode.WAIT_EVENT, event=3, value=value),
                        encode(Opcode.DMA_STORE, host_addr=out, host_row_stride=rb, local_addr=dst,
                               local_row_stride=1, row_bytes=rb, rows=n, planes=1, acc=1))
        # queue 1 meanwhile: a load and a store of its own, not held by the event
        wb1, _ = dq.window(1)
        await t1.host.load(wb1, bytes(range(caps.dim)) * 4)
        await dq.submit(1, encode(Opcode.DMA_LOAD, host_addr=wb1, host_row_stride=caps.dim,
                                  local_addr=caps.spad_rows - 4, local_row_stride=1,
                                  row_bytes=caps.dim, rows=4, planes=1),
                        encode(Opcode.DMA_STORE, host_addr=wb1 + 0x100, host_row_stride=caps.dim,
                               local_addr=caps.spad_rows - 4, local_row_stride=1,
                               row_bytes=caps.dim, rows=4, planes=1))
        await dq.wait_retired(1)
        assert await t1.host.read(wb1 + 0x100, 4 * caps.dim) == bytes(range(caps.dim)) * 4
        await ClockCycles(dut.clk, 500)
        status = R.Q_STATUS0.decode(await t1.read(R.Q_STATUS0))
        assert status["WAITING"] == 1, f"round {rnd}: queue 0 did not wait for the event: {status}"
        await _load(t0, m0, rng, True, 0, n)
        assert await _run(t0, m0, _peer(n, 0, dst, True, event=3, value=value, add=rnd == 1)) == ErrorCode.OK
        await dq.wait_retired(0)
        assert await t1.read(R.REGISTERS["EVENT3"]) == value and events[3] == value
        got = np.frombuffer(await t1.host.read(out, n * rb), np.uint8)
        want = m1.acc[dst:dst + n].view(np.uint8).ravel()
        assert np.array_equal(got, want), f"round {rnd}: the rows chip 1 stored after the event differ"
        t1.log.info(f"round {rnd}: {n} rows arrived, event 3 = {value}, queue 0 released")
    assert await t1.read(R.Q_ERROR0) == 0 and await t1.read(R.Q_ERROR1) == 0


@cocotb.test()
async def peer_timeout(dut):
    """The wire from chip 0 goes down: a DMA_PEER longer than the credits ends with LINK_TIMEOUT
    (the sender waits LINK_TIMEOUT cycles, then discards), the chip's other work goes on, the next
    DMA_PEER fails at once (the failure is sticky), and after a retrain the link carries data
    again."""
    t0, t1 = await _cluster(dut)
    m0, m1 = _models((t0, t1))
    rng = np.random.default_rng(t0.seed)
    timeout = int(rng.integers(50, 400))
    await t0.write(R.LINK_TIMEOUT, timeout)
    await _load(t0, m0, rng, True, 0, 32)
    dut.l0_fault_down.value = 1
    m0.link_failed = True             # the model: the link fails during the command
    start = await t0.read(R.TIMESTAMP)
    assert await _run(t0, m0, _peer(32, 0, 0, True)) == ErrorCode.LINK_TIMEOUT
    took = await t0.read(R.TIMESTAMP) - start
    t0.log.info(f"LINK_TIMEOUT after {took} cycles (timeout {timeout})")
    assert took < timeout + 2000, f"the timeout took {took} cycles"
    st = R.LINK_STATUS.decode(await t0.read(R.LINK_STATUS))
    assert st["FAILED"] == 1, st
    # the other channels keep working
    await _load(t0, m0, rng, False, 10, 5)
    await _check_rows(t0, m0, False, 10, 5, "chip 0 after the timeout")
    # sticky: at once, nothing sent
    assert await _run(t0, m0, _peer(1, 0, 0, False)) == ErrorCode.LINK_TIMEOUT
    # retrain with the wire up again: the link works
    dut.l0_fault_down.value = 0
    await t0.write(R.LINK_CTRL, R.LINK_CTRL.RETRAIN.put(1))
    m0.link_failed = False
    st = R.LINK_STATUS.decode(await t0.read(R.LINK_STATUS))
    assert st["FAILED"] == 0 and st["CREDITS"] > 0, st
    assert await t1.read(R.LINK_RX_ROWS) == 0, "the retrain did not restart chip 1's receiver"
    n = int(rng.integers(1, 30))
    await _load(t0, m0, rng, True, 0, n)
    assert await _run(t0, m0, _peer(n, 0, 5, True)) == ErrorCode.OK
    await _wait_reg(t1, R.LINK_RX_ROWS, n, what="after the retrain")
    await _check_rows(t1, m1, True, 5, n, "after the retrain")
