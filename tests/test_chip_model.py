"""Whole-chip golden model: the issue unit serving the command queues, the real firmware on the
ISS keeping the policy (docs/queues.md), driven through host registers and host memory by the
driver-neutral scenarios of verif/chip_scenarios.py (the RTL chip test runs the same scenarios).

Reproducibility: every random test uses ``SEED`` (``SEED=<n>`` in the environment, as
``make test SEED=<n>`` exports it; otherwise a fresh seed per process) plus a fixed per-test
offset, and prints it. Rerun a failure with ``SEED=<n> .venv/bin/python -m pytest
tests/test_chip_model.py``.
"""
import os
import random

import numpy as np
import pytest
from elftools.elf.elffile import ELFFile

from spec import mmio_registers as M
from spec import registers as R
from spec.capabilities import Capabilities
from spec.commands import encode
from spec.descriptors import ErrorCode, Opcode
from spec.firmware_image import FirmwareImage, FirmwareState
from firmware import build as fw_build
from driver.ops import run_sync
from verif.functional_coverage import probe
from driver.bringup import FirmwareError, load_firmware
from verif import chip_scenarios as S
from spec.chip import INFLIGHT, QUEUES
from verif.dag_workload import Workload, build_dag
from verif.error_injection import ERROR_KINDS, RESERVED_FLAG_OPS, blackhole_window, error_queue
from verif.queue_host import configure, reset_queue
from verif.ring_layout import Layout, QueueConfig
from verif.model_time import log_mmio, stepped
from golden.chip_model import MMIO_BASE, ChipModel, unpack_record
from hdl_gen.config import KakiConfig

CAPS = Capabilities.from_config(KakiConfig(dim=4, spad_bank_rows=128, acc_bank_rows=128))
HOST_BYTES = 1 << 18


def _seed_from_env():
    env = os.environ.get("SEED", "")
    return int(env) if env else random.SystemRandom().randrange(1, 2**31)


SEED = _seed_from_env()


def seed(offset):
    print(f"[chip model] SEED={SEED} (+{offset}) (rerun: SEED={SEED} .venv/bin/python -m pytest "
          f"tests/test_chip_model.py)")
    return SEED + offset


def bimodal(rng):
    """Engine delay: mostly quick, sometimes slow, so barriers and events really have to wait."""
    return rng.integers(200, 800) if rng.random() < 0.15 else rng.integers(1, 30)


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    return fw_build.build(tmp_path_factory.mktemp("fw") / "kaki_fw.elf")


@pytest.fixture(scope="module")
def image(elf):
    return FirmwareImage.from_elf(elf)


def chip(image, s=0, engine_delay=bimodal, **kw):
    """A booted golden chip whose memory past HOST_BYTES answers DECERR, and not at all in the
    error scenarios' black hole."""
    return probe(ChipModel(CAPS, host_bytes=HOST_BYTES, firmware=image, seed=s,
                           engine_delay=engine_delay, blackhole=blackhole_window(HOST_BYTES), **kw),
                 CAPS.dim)


def words_bytes(words):
    return b"".join(w.to_bytes(4, "little") for w in words)


def setup_queue(c, q, *, ring, log2, cpl, window=(0x20000, 0x10000)):
    run_sync(configure(q, QueueConfig(ring, log2, cpl, *window)), c)
    c.host_write(cpl, (0).to_bytes(4, "little"))


# ------------------------------------------------------------------------------------ boot
def test_boots_through_core_mem_and_reports(image):
    c = ChipModel(CAPS, host_bytes=HOST_BYTES)
    assert R.FW_STATUS.STATE.get(c.read(R.FW_STATUS)) == FirmwareState.RESET
    version = run_sync(load_firmware(image), c)
    assert version == fw_build.version()[1] == c.read(R.FW_VERSION)
    c.run(2000)
    st = R.FW_STATUS.decode(c.read(R.FW_STATUS))
    assert st == {"STATE": FirmwareState.READY, "SLEEPING": 1}, "idle firmware sleeps in WFI"
    assert c.iss.csr["mie"] & (1 << 11) and not c.iss.csr["mstatus"] & (1 << 3)
    assert c.read(R.ID) == R.ID.MAGIC.reset
    cq = R.CAP_QUEUES.decode(c.read(R.CAP_QUEUES))
    assert cq == {"QUEUES": 4, "FIFO_DEPTH": 4, "PREFETCH": 4, "EVENTS": 16}
    assert Capabilities.from_values(c.read).dim == CAPS.dim
    t = c.read(R.TIMESTAMP)
    c.run(10)
    assert c.read(R.TIMESTAMP) == t + 10


# ------------------------------------------------------------------------------------ time
def _count_skipped(c):
    """Steps ``c`` leaves out (skips in one go): a one-element list, updated as it runs."""
    skipped, skip = [0], c._skip

    def counted(k):
        skipped[0] += k
        skip(k)
    c._skip = counted
    return skipped


def _state(c):
    return dict(now=c.now, cycle=c.iss.cycle, instret=c.iss.instret, pc=c.iss.pc,
                regs=list(c.iss.regs), dmem=bytes(c.iss.dmem), host=bytes(c.host), irq=c.irq,
                csrs={name: c.read(reg) for name, reg in R.REGISTERS.items()})


def _lone_hang(c, s):
    """A GEMM that hangs with nothing else to do: only WORK.HUNG (the hardware's watchdog count,
    an event of the model's time) wakes the sleeping core, which resets the engine; the command
    fails with WATCHDOG."""
    setup_queue(c, 0, ring=0x1000, log2=3, cpl=0x5000)
    c.write(R.WATCHDOG, 3000)
    c.write(R.DEBUG_HANG, R.DEBUG_HANG.GEMM.put(1))
    c.host_write(0x1000, words_bytes(encode(Opcode.GEMM, m=2, k_tiles=1, n_tiles=1, b_addr=8)))
    c.write(R.Q_DOORBELL0, 1)
    steps = c.run_until_idle()
    assert unpack_record(c.host_read(0x5010, 16))["status"] == ErrorCode.WATCHDOG
    return steps


def _error(kind):
    return lambda c, s: run_sync(S.error_scenario(CAPS, s, kind, host_bytes=HOST_BYTES, jobs=12), c).cycles


#: Scenarios run both ways, with the firmware registers each makes the firmware write: none for
#: a DAG (the issue unit serves it all), ENGINE_RESET for a hung engine (WORK.HUNG), QRESET_ACK
#: for the recovery of a failed queue, Q_POP for a malformed head (WORK.QREADY).
TIME_SCENARIOS = {
    "dag": (lambda c, s: run_sync(S.dag_scenario(CAPS, s, host_bytes=HOST_BYTES, jobs=20), c).cycles,
            set()),
    "watchdog_gemm": (_error("watchdog_gemm"), {M.ENGINE_RESET, M.QRESET_ACK}),
    "cpl_decerr": (_error("cpl_decerr"), {M.QRESET_ACK}),
    "bad_event": (_error("bad_event"), {M.Q_POP, M.QRESET_ACK}),
    "lone_hang": (_lone_hang, {M.ENGINE_RESET}),
}


@pytest.mark.parametrize("kind", sorted(TIME_SCENARIOS))
def test_event_driven_time_equals_stepping(image, kind):
    """The same scenario on a model that skips idle steps and one that does every tick in full:
    the same firmware MMIO accesses at the same steps, and the same state at the end."""
    s = seed(500)
    scenario, writes = TIME_SCENARIOS[kind]
    runs = []
    for fast in (True, False):
        c = chip(image, s)
        if not fast:
            stepped(c)
            c._skip_idle = False     # and every stage of the issue unit scans in every tick
        skipped = _count_skipped(c)
        log = log_mmio(c)
        start = c.now
        result = scenario(c, s)
        runs.append((result, log, _state(c), skipped[0], c.now - start))
    (result, log, state, skipped, steps), (ref_result, ref_log, ref_state, ref_skipped, _) = runs
    assert result == ref_result and len(log) == len(ref_log)
    assert log == ref_log
    assert state == ref_state
    assert ref_skipped == 0
    assert skipped > steps // 2, f"only {skipped} of {steps} steps skipped: the test proves little"
    assert {a - MMIO_BASE for _, w, a, _ in log if w} == {r.addr for r in writes}, \
        "the firmware wrote what the scenario needs of it, and nothing else"


# ------------------------------------------------------------------------------------ DAG
@pytest.mark.parametrize("k", range(3))
def test_random_dag_on_all_queues(image, k):
    s = seed(100 + k)
    c = chip(image, s)
    rep = run_sync(S.dag_scenario(CAPS, s, host_bytes=HOST_BYTES, jobs=40), c)
    assert rep.descriptors > 100
    print(f"{rep.descriptors} descriptors in {rep.cycles} cycles")


def test_ring_wraps_many_times(image):
    """Two-entry rings: every descriptor reuses a slot; the host refills as C advances."""
    s = seed(200)
    c = chip(image, s, engine_delay=(1, 20))
    layout = Layout(HOST_BYTES)
    wl, _ = build_dag(CAPS, s, layout, queues=(1, 2), jobs=20)   # > 8 per queue for any seed
    wl.configs = {q: QueueConfig(**{**cfg.__dict__, "log2": 1}) for q, cfg in wl.configs.items()}
    rep = run_sync(S.run_workload(wl), c)
    assert all(len(wl.streams[q]) > 8 for q in (1, 2))
    assert rep.consumer == {q: len(wl.streams[q]) for q in (1, 2)}


def test_event_timeline_wraps(image):
    """Signals 0x7FFFFFF0, 0xFFFFFFE0, 0x10: each wait releases only after its own signal (an
    unsigned compare would release the last one early), proven by the record timestamps."""
    c = chip(image, engine_delay=3000)
    layout = Layout(HOST_BYTES)
    wl = Workload("event wrap", 0, CAPS, layout, {}, {0: [], 1: []})
    data = layout.data_base
    wl.init[data] = bytes(range(64))
    for q in (0, 1):
        wl.configs[q] = QueueConfig(layout.ring_base(q), 4, layout.cpl_base(q), data, 64)
    load = dict(host_addr=data, host_row_stride=4, row_bytes=4, rows=1, planes=1, local_addr=0)
    for v in (0x7FFF_FFF0, 0xFFFF_FFE0, 0x10):
        wl.add(0, encode(Opcode.DMA_LOAD, **load))           # slow: the signal waits for it
        sig = wl.add(0, encode(Opcode.SIGNAL_EVENT, event=5, value=v), event=(5, v))
        wait = wl.add(1, encode(Opcode.WAIT_EVENT, event=5, value=v), event=(5, v))
        wl.add(1, encode(Opcode.NOP))
        wl.edges.append((sig, wait))
    run_sync(S.run_workload(wl), c)
    assert c.read(R.EVENT5) == 0x10


def test_wait_state_and_event_stall_counter(image):
    c = chip(image, engine_delay=5)
    setup_queue(c, 0, ring=0x1000, log2=3, cpl=0x5000)
    setup_queue(c, 1, ring=0x2000, log2=3, cpl=0x6000)
    c.host_write(0x2000, words_bytes(encode(Opcode.WAIT_EVENT, event=3, value=9)))
    c.write(R.Q_DOORBELL1, 1)
    c.run(3000)
    assert R.Q_STATUS1.WAITING.get(c.read(R.Q_STATUS1)) == 1
    assert c.read(R.Q_CONSUMER1) == 0
    stall = c.read(R.PERF_Q_EVENT_STALL1)
    assert stall > 1000
    assert R.FW_STATUS.SLEEPING.get(c.read(R.FW_STATUS)), "a queue blocked on an event lets the core sleep"
    c.host_write(0x1000, words_bytes(encode(Opcode.SIGNAL_EVENT, event=3, value=9)))
    c.write(R.Q_DOORBELL0, 1)
    c.run_until_idle()
    assert c.read(R.Q_CONSUMER0) == 1 and c.read(R.Q_CONSUMER1) == 1
    assert R.Q_STATUS1.WAITING.get(c.read(R.Q_STATUS1)) == 0
    assert c.read(R.PERF_Q_EVENT_STALL1) >= stall
    assert c.read(R.EVENT3) == 9


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kind", sorted(ERROR_KINDS))
def test_error_class_halts_only_its_queue(image, kind):
    s = seed(300 + sorted(ERROR_KINDS).index(kind))
    c = chip(image, s)
    rep = run_sync(S.error_scenario(CAPS, s, kind, host_bytes=HOST_BYTES), c)
    assert rep.phases and rep.phases[0].descriptors > 0
    assert R.FW_STATUS.STATE.get(c.read(R.FW_STATUS)) == FirmwareState.READY


#: Error classes run on every queue in one test run (the random ones land on the queue
#: error_queue(seed) picks); all classes under KAKI_REGRESS.
EVERY_QUEUE_KINDS = (sorted(ERROR_KINDS) if os.environ.get("KAKI_REGRESS")
                     else ["bad_opcode", "reserved_flags", "ring_overflow", "producer_backwards"])


@pytest.mark.parametrize("kind", EVERY_QUEUE_KINDS)
def test_error_class_on_every_queue(image, kind):
    """The same error class on each queue in turn, the other queues running a DAG (reserved flag
    bits: on each opcode RESERVED_FLAG_OPS rotates over, by the seed)."""
    runs = len(RESERVED_FLAG_OPS) if kind == "reserved_flags" else QUEUES
    for i in range(runs):
        q = i % QUEUES
        s = seed(500 + 10 * sorted(ERROR_KINDS).index(kind) + i)
        c = chip(image, s)
        rep = run_sync(S.error_scenario(CAPS, s, kind, host_bytes=HOST_BYTES, queue=q, jobs=8), c)
        assert rep.name.endswith(f"on queue {q}") and rep.phases[0].descriptors > 0


def test_error_queue_rotates_with_the_seed():
    assert sorted(error_queue(s) for s in range(100, 100 + QUEUES)) == list(range(QUEUES))


def test_queue_reset_waits_for_commands_in_flight(image):
    """RESET while issued commands run: RESETTING holds until they retired and their records
    were written; then the indices restart at 0 and the queue runs again."""
    c = chip(image, engine_delay=2000)
    setup_queue(c, 2, ring=0x3000, log2=3, cpl=0x7000)
    load = dict(host_addr=0x20000, host_row_stride=4, row_bytes=4, rows=1, planes=1)
    for i in range(6):
        c.host_write(0x3000 + 32 * i, words_bytes(encode(Opcode.DMA_LOAD, tag=i, local_addr=i, **load)))
    c.write(R.Q_DOORBELL2, 6)
    c.run(500)
    assert c.read(R.Q_CONSUMER2) == 0
    c.write(R.Q_CTRL2, R.Q_CTRL2.RESET.put(1) | R.Q_CTRL2.ENABLE.put(1))
    assert R.Q_STATUS2.RESETTING.get(c.read(R.Q_STATUS2))
    c.run(1000)
    assert R.Q_STATUS2.RESETTING.get(c.read(R.Q_STATUS2)), "an issued command is still running"
    c.run_until_idle()
    st = R.Q_STATUS2.decode(c.read(R.Q_STATUS2))
    assert st["RESETTING"] == 0 and st["ACTIVE"] == 1 and st["PREFETCHED"] == 0
    assert c.read(R.Q_CONSUMER2) == 0 and c.read(R.Q_FETCH2) == 0
    # The issued commands (4: the engine FIFO depth) completed and got records before.
    recs = [unpack_record(c.host_read(0x7000 + 16 * (1 + i), 16)) for i in range(4)]
    assert [r["tag"] for r in recs] == [0, 1, 2, 3] and all(r["status"] == 0 for r in recs)
    assert c.read(R.PERF_Q_RETIRED2) == 4
    c.host_write(0x3000, words_bytes(encode(Opcode.NOP, tag=77)))
    c.write(R.Q_DOORBELL2, 1)
    c.run_until_idle()
    assert c.read(R.Q_CONSUMER2) == 1
    assert unpack_record(c.host_read(0x7000 + 16, 16))["tag"] == 77


def test_producer_moved_back_is_not_fetched_past_once_consumed(image):
    """A doorbell moving P back between C and F is legal; the descriptors already fetched still
    run, so C passes P. Nothing past P may be fetched then (the fetch condition bounds P - C by
    the ring size; found by the formal proof of the queue controller, docs/formal.md)."""
    c = chip(image, engine_delay=300)
    setup_queue(c, 1, ring=0x3000, log2=2, cpl=0x7000)
    load = dict(host_addr=0x20000, host_row_stride=4, row_bytes=4, rows=1, planes=1)
    for i in range(4):
        c.host_write(0x3000 + 32 * i, words_bytes(encode(Opcode.DMA_LOAD, tag=i, local_addr=i, **load)))
    c.write(R.Q_DOORBELL1, 4)
    c.run(200)
    assert c.read(R.Q_FETCH1) == 4 and c.read(R.Q_CONSUMER1) == 0
    c.write(R.Q_DOORBELL1, 1)                 # back between C = 0 and F = 4: accepted
    assert not R.Q_STATUS1.HALTED.get(c.read(R.Q_STATUS1))
    c.run_until_idle()
    assert c.read(R.Q_CONSUMER1) == 4 and c.read(R.Q_FETCH1) == 4, "fetched past P"
    assert c.read(R.PERF_Q_RETIRED1) == 4
    c.host_write(0x3000, words_bytes(encode(Opcode.NOP, tag=77)))
    c.write(R.Q_DOORBELL1, 5)                 # ahead of C again: index 4 (slot 0) runs
    c.run_until_idle()
    assert c.read(R.Q_CONSUMER1) == 5
    assert unpack_record(c.host_read(0x7000 + 16, 16))["tag"] == 77


# ------------------------------------------------------------------------------------ interrupts
def test_irq_masking_and_w1c(image):
    c = chip(image, engine_delay=3)
    setup_queue(c, 3, ring=0x4000, log2=2, cpl=0x8000)
    c.host_write(0x4000, words_bytes(encode(Opcode.NOP, irq=True, tag=1)))
    c.host_write(0x4020, words_bytes(encode(Opcode.NOP, tag=2)))
    c.write(R.Q_DOORBELL3, 2)
    c.run_until_idle()
    cpl3 = R.IRQ_STATUS.QUEUE_CPL.put(1 << 3)
    assert c.read(R.IRQ_STATUS) == cpl3
    assert not c.irq, "IRQ_ENABLE is 0 after reset"
    c.write(R.IRQ_ENABLE, R.IRQ_ENABLE.QUEUE_ERROR.put(0xF))
    assert not c.irq, "a masked cause does not raise the line"
    c.write(R.IRQ_ENABLE, R.IRQ_ENABLE.QUEUE_CPL.put(1 << 3))
    assert c.irq
    c.write(R.IRQ_STATUS, R.IRQ_STATUS.QUEUE_CPL.put(1 << 2))     # another bit: no effect
    assert c.irq and c.read(R.IRQ_STATUS) == cpl3
    c.write(R.IRQ_STATUS, cpl3)
    assert not c.irq and c.read(R.IRQ_STATUS) == 0
    # A descriptor without flags.irq raises nothing; an error raises QUEUE_ERROR.
    c.host_write(0x4040, words_bytes(encode(Opcode.NOP, tag=3)))
    c.host_write(0x4060, words_bytes(encode(Opcode.WAIT_EVENT, event=99)))
    c.write(R.IRQ_ENABLE, R.IRQ_ENABLE.QUEUE_CPL.put(0xF) | R.IRQ_ENABLE.QUEUE_ERROR.put(0xF))
    c.write(R.Q_DOORBELL3, 4)
    c.run_until_idle()
    assert c.read(R.IRQ_STATUS) == R.IRQ_STATUS.QUEUE_ERROR.put(1 << 3) and c.irq
    assert (c.read(R.Q_ERROR3), c.read(R.Q_ERROR_INDEX3)) == (ErrorCode.BAD_EVENT, 3)
    c.write(R.IRQ_STATUS, R.IRQ_STATUS.QUEUE_ERROR.put(1 << 3))
    assert not c.irq


# ------------------------------------------------------------------------------------ issue unit
GEMM = dict(m=2, k_tiles=1, n_tiles=1, b_addr=8)
LOAD = dict(host_addr=0x20000, host_row_stride=4, row_bytes=4, rows=1, planes=1)


def _issued(c, q):
    """H: descriptors popped from queue q's prefetch FIFO (Q_FETCH - Q_STATUS.PREFETCHED)."""
    prefetched = R.Q_STATUS0.PREFETCHED.get(c.read(R.REGISTERS[f"Q_STATUS{q}"]))
    return c.read(R.REGISTERS[f"Q_FETCH{q}"]) - prefetched


def _records(c, cpl, n):
    return [unpack_record(c.host_read(cpl + 16 * (1 + i), 16)) for i in range(n)]


def test_issue_window_and_engine_fifo_limits(image):
    """Behind a slow DMA load, NOPs are issued (done at once) until the window holds INFLIGHT
    descriptors without a completion request; GEMMs until FIFO_DEPTH of them are issued and not
    retired. Records come in queue order once the load retires."""
    c = chip(image, engine_delay=6000)
    setup_queue(c, 0, ring=0x1000, log2=5, cpl=0x5000)
    setup_queue(c, 1, ring=0x2000, log2=3, cpl=0x6000)
    descs = [encode(Opcode.DMA_LOAD, tag=100, **LOAD)] + [encode(Opcode.NOP, tag=i) for i in range(20)]
    for i, w in enumerate(descs):
        c.host_write(0x1000 + 32 * i, words_bytes(w))
    for i in range(6):
        c.host_write(0x2000 + 32 * i, words_bytes(encode(Opcode.GEMM, tag=200 + i, **GEMM)))
    c.write(R.Q_DOORBELL0, len(descs))
    c.write(R.Q_DOORBELL1, 6)
    c.run(3000)
    assert _issued(c, 0) == INFLIGHT and c.read(R.Q_CONSUMER0) == 0
    assert _issued(c, 1) == CAPS.fifo_depth and c.read(R.Q_CONSUMER1) == 0
    assert not c.read(R.STATUS) & R.STATUS.IDLE.mask
    c.run_until_idle()
    assert c.read(R.Q_CONSUMER0) == len(descs) and c.read(R.Q_CONSUMER1) == 6
    recs = _records(c, 0x5000, len(descs))
    assert [r["tag"] for r in recs] == [100] + list(range(20))
    assert [r["opcode"] for r in recs] == [Opcode.DMA_LOAD] + [Opcode.NOP] * 20
    assert all(r["status"] == ErrorCode.OK for r in recs)
    ts = [r["timestamp"] for r in recs]
    assert ts == sorted(ts) and len(set(ts)) == len(ts), "one completion request per step"
    assert [r["tag"] for r in _records(c, 0x6000, 6)] == list(range(200, 206))


def test_issue_enable_gates_issue_not_completion(image):
    """ISSUE.ENABLE = 0 (as a firmware fault leaves it): nothing more is issued and no head wakes
    the firmware, while commands already issued retire and get records. A Q_POP of an empty
    prefetch FIFO, or of a head the issue unit serves itself, is ignored."""
    c = chip(image, engine_delay=2000)
    setup_queue(c, 0, ring=0x1000, log2=3, cpl=0x5000)
    for i in range(2):
        c.host_write(0x1000 + 32 * i, words_bytes(encode(Opcode.DMA_LOAD, tag=i, local_addr=i, **LOAD)))
    c.host_write(0x1040, words_bytes(encode(Opcode.NOP, tag=2)))
    c.write(R.Q_DOORBELL0, 3)
    c.run(100)
    assert _issued(c, 0) == 3 and c.read(R.Q_CONSUMER0) == 0
    c.regs.write(MMIO_BASE + M.ISSUE.addr, 0, 0xF)
    c.host_write(0x1060, words_bytes(encode(Opcode.NOP, tag=3)))
    bad = encode(Opcode.NOP, tag=4)
    bad[0] |= 0x80                                                         # an unknown opcode
    c.host_write(0x1080, words_bytes(bad))
    c.write(R.Q_DOORBELL0, 5)
    c.run_until_idle()
    assert c.read(R.Q_CONSUMER0) == 3 and _issued(c, 0) == 3
    assert R.Q_STATUS0.PREFETCHED.get(c.read(R.Q_STATUS0)) == 2
    assert M.WORK.QREADY.get(c.regs.read(MMIO_BASE + M.WORK.addr)) == 0 and c.iss.sleeping
    # queue 0's head is the NOP, queues 1 to 3 have none: nothing is popped
    pop = M.Q_POP.QUEUE.put(0xF) | M.Q_POP.STATUS.put(ErrorCode.BAD_OPCODE)
    c.regs.write(MMIO_BASE + M.Q_POP.addr, pop, 0xF)
    c.run_until_idle()
    st = R.Q_STATUS0.decode(c.read(R.Q_STATUS0))
    assert st["PREFETCHED"] == 2 and not st["HALTED"]
    c.regs.write(MMIO_BASE + M.ISSUE.addr, M.ISSUE.ENABLE.put(1), 0xF)
    c.run_until_idle()
    assert c.read(R.Q_CONSUMER0) == 5
    recs = _records(c, 0x5000, 5)
    assert [(r["tag"], r["status"]) for r in recs] == [(0, 0), (1, 0), (2, 0), (3, 0),
                                                      (4, ErrorCode.BAD_OPCODE)]
    assert (c.read(R.Q_ERROR0), c.read(R.Q_ERROR_INDEX0)) == (ErrorCode.BAD_OPCODE, 4)


def test_watchdog_reset_retires_the_hung_command_and_runs_the_next(image):
    """A hung GEMM with two more issued behind it: WORK.HUNG wakes the firmware WATCHDOG.CYCLES
    steps after the GEMM started; ENGINE_RESET retires it with WATCHDOG (DONE_GEMM does not count
    it) and the two behind it run and get records, though the queue failed; the BARRIER behind
    them is never issued (the queue failed, then halted at the WATCHDOG record)."""
    c = chip(image, engine_delay=50)
    log = log_mmio(c)
    watchdog = 3000
    setup_queue(c, 0, ring=0x1000, log2=3, cpl=0x5000)
    c.write(R.WATCHDOG, watchdog)
    c.write(R.DEBUG_HANG, R.DEBUG_HANG.GEMM.put(1))
    for i in range(3):
        c.host_write(0x1000 + 32 * i, words_bytes(encode(Opcode.GEMM, tag=i, **GEMM)))
    c.host_write(0x1060, words_bytes(encode(Opcode.BARRIER, tag=3)))
    c.host_write(0x1080, words_bytes(encode(Opcode.NOP, tag=4)))
    t0 = c.now
    c.write(R.Q_DOORBELL0, 5)
    c.run_until_idle()
    resets = [t for t, w, a, _ in log if w and a - MMIO_BASE == M.ENGINE_RESET.addr]
    assert len(resets) == 1 and watchdog <= resets[0] - t0 <= watchdog + 100, (resets, t0)
    assert c.read(R.Q_CONSUMER0) == 3 and _issued(c, 0) == 3, "the BARRIER after the failure waits"
    assert [(r["tag"], r["status"]) for r in _records(c, 0x5000, 3)] == \
        [(0, ErrorCode.WATCHDOG), (1, 0), (2, 0)]
    assert (c.read(R.Q_ERROR0), c.read(R.Q_ERROR_INDEX0)) == (ErrorCode.WATCHDOG, 0)
    assert c.read(R.DONE_GEMM) == 2


# ------------------------------------------------------------------------------------ firmware
def test_firmware_reload_keeps_queues_going(image):
    """Run work, reload the firmware through CORE_MEM_*, run more: the new firmware picks the
    queues up at their current indices (no queue reset) and events restart at 0 (the issue unit
    starts afresh with the core)."""
    s = seed(400)
    c = chip(image, s)
    run_sync(S.dag_scenario(CAPS, s, host_bytes=HOST_BYTES, jobs=15), c)
    consumed = [c.read(R.REGISTERS[f"Q_CONSUMER{q}"]) for q in range(4)]
    assert sum(consumed) > 20
    assert any(c.read(R.REGISTERS[f"EVENT{e}"]) for e in range(16)), "the DAG signalled events"
    assert run_sync(load_firmware(image), c) == fw_build.version()[1]
    assert all(c.read(R.REGISTERS[f"EVENT{e}"]) == 0 for e in range(16))
    rep = run_sync(S.dag_scenario(CAPS, s + 1, host_bytes=HOST_BYTES, jobs=15, fill_host=False), c)
    assert rep.base == {q: consumed[q] for q in range(4)}


def test_firmware_fault_reports_by_fw_msg_interrupt(elf, image):
    """An illegal instruction: FW_FAULT_* and FW_STATUS FAULT, and FW_MSG raises the host IRQ."""
    with open(elf, "rb") as f:
        main = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name("main")[0]["st_value"]
    bad = bytearray(image.imem)
    bad[main:main + 4] = b"\xff\xff\xff\xff"
    c = ChipModel(CAPS, host_bytes=HOST_BYTES)
    c.write(R.IRQ_ENABLE, R.IRQ_ENABLE.FW_MSG.put(1))
    with pytest.raises(FirmwareError, match="faulted.*cause 0x2") as err:
        run_sync(load_firmware(FirmwareImage(bytes(bad), image.dmem, 0)), c)
    assert (err.value.pc, err.value.cause) == (main, 2)
    assert (c.read(R.FW_FAULT_PC), c.read(R.FW_FAULT_TVAL)) == (main, 0xFFFFFFFF)
    assert c.irq and R.IRQ_STATUS.FW_MSG.get(c.read(R.IRQ_STATUS)) and c.read(R.FW_MSG) == 2
    c.write(R.IRQ_STATUS, R.IRQ_STATUS.FW_MSG.put(1))
    assert not c.irq
    assert run_sync(load_firmware(image), c) == fw_build.version()[1]


def test_firmware_cost_per_command(image):
    """Engine commands, NOPs, barriers and events cost the firmware no instruction (docs/queues.md
    "Firmware"): queue 0 runs 256 descriptors, DMA loads with a NOP, a BARRIER and a SIGNAL_EVENT
    in every 16, queue 1 a WAIT_EVENT and a NOP per signal; the core sleeps throughout (it
    retires no instruction) and every record is OK. Steps per descriptor printed."""
    c = chip(image, engine_delay=1, fetch_latency=1, cpl_latency=1)
    setup_queue(c, 0, ring=0x1000, log2=6, cpl=0x5000)
    setup_queue(c, 1, ring=0x3000, log2=6, cpl=0x7000)

    def desc(i):
        if i % 16 == 5:
            return encode(Opcode.NOP, tag=i)
        if i % 16 == 10:
            return encode(Opcode.BARRIER, tag=i)
        if i % 16 == 15:
            return encode(Opcode.SIGNAL_EVENT, tag=i, event=2, value=i)
        return encode(Opcode.DMA_LOAD, tag=i, host_addr=0x20000, host_row_stride=4, row_bytes=4,
                      rows=1, planes=1)
    waits = [w for v in range(15, 256, 16) for w in (encode(Opcode.WAIT_EVENT, tag=v, event=2, value=v),
                                                      encode(Opcode.NOP, tag=v))]
    for i, w in enumerate(waits):
        c.host_write(0x3000 + 32 * i, words_bytes(w))
    n, done = 256, 0
    i0, t0 = c.iss.instret, c.now
    assert c.iss.sleeping
    c.write(R.Q_DOORBELL1, len(waits))
    while c.read(R.Q_CONSUMER0) < n:
        room = min(n, c.read(R.Q_CONSUMER0) + 64) - done
        for i in range(done, done + room):
            c.host_write(0x1000 + 32 * (i % 64), words_bytes(desc(i)))
        if room:
            done += room
            c.write(R.Q_DOORBELL0, done)
        c.run(500)
        assert c.iss.sleeping
    c.run_until_idle()
    assert c.read(R.Q_CONSUMER1) == len(waits) == 32
    assert c.iss.instret == i0, "the firmware ran"
    recs = [unpack_record(c.host_read(0x5010 + 16 * (i % 64), 16)) for i in range(n - 64, n)]
    recs += [unpack_record(c.host_read(0x7010 + 16 * i, 16)) for i in range(len(waits))]
    assert all(r["status"] == ErrorCode.OK for r in recs)
    assert not c.read(R.Q_STATUS0) & R.Q_STATUS0.HALTED.mask and c.read(R.EVENT2) == 255
    print(f"{(c.now - t0) / (n + len(waits)):.1f} steps per descriptor, no firmware instruction")


# ------------------------------------------------------------------------------------ host side
def test_direct_submission_only_while_the_core_is_held(image):
    c = ChipModel(CAPS, host_bytes=HOST_BYTES)
    c.host[0x100:0x108] = np.arange(8, dtype=np.uint8)
    load = encode(Opcode.DMA_LOAD, irq=True, tag=5, host_addr=0x100, host_row_stride=4, row_bytes=4,
                  rows=2, planes=1, local_row_stride=1)
    for reg, w in zip(R.CMD, load):
        c.write(reg, w)
    c.write(R.CMD_SUBMIT, 1)
    assert c.read(R.DONE_DMA_LOAD) == 1 and c.read(R.IRQ_STATUS) == R.IRQ_STATUS.DMA_LOAD_DONE.mask
    assert list(c.dev.spad[1]) == [4, 5, 6, 7]
    # SIGNAL_EVENT means nothing to the dispatcher: BAD_OPCODE (docs: queue-level opcodes).
    for reg, w in zip(R.CMD, encode(Opcode.SIGNAL_EVENT, tag=6, event=1, value=1)):
        c.write(reg, w)
    c.write(R.CMD_SUBMIT, 1)
    info = R.ERROR_INFO.decode(c.read(R.ERROR_INFO))
    assert info == {"CODE": ErrorCode.BAD_OPCODE, "OPCODE": Opcode.SIGNAL_EVENT, "TAG": 6}
    c.write(R.IRQ_STATUS, 0xFFFFFFFF)
    run_sync(load_firmware(image), c)
    for reg, w in zip(R.CMD, load):
        c.write(reg, w)
    c.write(R.CMD_SUBMIT, 1)
    assert c.read(R.DONE_DMA_LOAD) == 1, "not executed while the firmware owns dispatch"
    assert R.ERROR_INFO.CODE.get(c.read(R.ERROR_INFO)) == 15     # DIRECT_SUBMIT


def test_perf_counters_and_firmware_perf_window(image):
    c = chip(image, engine_delay=50)
    setup_queue(c, 0, ring=0x1000, log2=3, cpl=0x5000)
    c.host_write(0x1000, words_bytes(encode(Opcode.DMA_LOAD, host_addr=0x20000, host_row_stride=8,
                                            row_bytes=8, rows=2, planes=1, acc=1)))
    c.write(R.Q_DOORBELL0, 1)
    c.run_until_idle()
    assert c.read(R.PERF_Q_RETIRED0) == 1 and c.read(R.PERF_DMA_LOAD_BYTES) == 16
    assert c.read(R.PERF_DMA_LOAD_BUSY) >= 50
    # The firmware reads any counter through PERF_SEL/PERF_VALUE (by its host CSR address).
    c.regs.write(MMIO_BASE + M.PERF_SEL.addr, R.PERF_Q_RETIRED0.addr, 0xF)
    assert c.regs.read(MMIO_BASE + M.PERF_VALUE.addr) == 1
    c.regs.write(MMIO_BASE + M.PERF_SEL.addr, R.Q_CTRL0.addr, 0xF)
    assert c.regs.read(MMIO_BASE + M.PERF_VALUE.addr) == 0
    c.write(R.PERF_CTRL, R.PERF_CTRL.FREEZE.put(1))
    cyc = c.read(R.PERF_CYCLES)
    c.run(100)
    assert c.read(R.PERF_CYCLES) == cyc
    c.write(R.PERF_CTRL, R.PERF_CTRL.CLEAR.put(1) | R.PERF_CTRL.FREEZE.put(1))
    assert c.read(R.PERF_CYCLES) == 0 and c.read(R.PERF_Q_RETIRED0) == 0
    assert c.read(R.PERF_CTRL) == R.PERF_CTRL.FREEZE.put(1), "CLEAR is a pulse, FREEZE is kept"
    c.write(R.PERF_CTRL, 0)
    c.run(10)
    assert c.read(R.PERF_CYCLES) == 10


def test_error_classes_back_to_back_on_one_chip(image):
    """Found by the pyuvm error sequence: a workload reusing a queue left enabled by the previous
    one was never re-checked (the configuration is checked when a queue becomes active), so a bad
    ring size went unnoticed; run_workload now disables such a queue before configuring it."""
    c = chip(image, seed(9))
    for n, kind in enumerate(("misaligned_cpl", "reserved_event", "bad_opcode", "bad_ring_size",
                              "misaligned_ring", "ring_overflow")):
        rep = run_sync(S.error_scenario(CAPS, seed(9) + n, kind, host_bytes=HOST_BYTES), c)
        assert rep.descriptors > 0, kind


class _SlowQueueStatus:
    """The golden chip, except that reading Q_STATUS of queue ``q`` takes ``delay`` cycles before
    the value is taken, as a CSR read does on the RTL: the queue may retire (and halt) between the
    scenario's consumer read and its status read."""

    def __init__(self, dev, q, delay):
        self.dev, self.name, self.delay = dev, f"Q_STATUS{q}", delay

    def read(self, reg):
        if reg.name == self.name:
            self.dev.wait(self.delay)
        return self.dev.read(reg)

    def __getattr__(self, name):
        return getattr(self.dev, name)


def test_scenario_waits_for_the_halting_retirement(image):
    """Found by make regress (SEED=12, uvm_errors, watchdog_vec on queue 2): the scenario took a
    queue for halted-and-quiet when the consumer index read just before the halt was stale — it had
    been quiet while the engine hung — and the final Q_CONSUMER was one higher. Quiet polls now
    count only while halted. Swept over the read delay so that the watchdog's retirement falls
    between the two reads."""
    q = 2
    for delay in range(0, 450, 3):
        s = seed(700)
        c = _SlowQueueStatus(chip(image, s), q, delay)
        rep = run_sync(S.error_scenario(CAPS, s, "watchdog_vec", host_bytes=HOST_BYTES, queue=q, jobs=8), c)
        assert rep.phases[0].descriptors > 0, delay


@pytest.mark.parametrize("hung", ["load", "store"])
def test_dma_watchdog_resets_only_the_hung_channel(image, hung):
    """A DMA channel hung on memory that does not answer (bus timeout off): the watchdog resets it
    alone; a chain of commands on the other channel, one in flight at the reset, completes
    bit-exactly (chip_scenarios.dma_watchdog_scenario)."""
    s = seed(800 + (hung == "store"))
    c = chip(image, s, engine_delay=1000)
    rep = run_sync(S.dma_watchdog_scenario(CAPS, s, host_bytes=HOST_BYTES, hung=hung,
                                           watchdog=3000), c)
    assert rep.phases[0].descriptors > 0


def test_bus_timeout_cycles(image):
    """A DMA load from the black hole takes BUS_TIMEOUT.CYCLES steps longer and fails with
    BUS_TIMEOUT; with the timeout off the engine hangs (busy) until the watchdog resets it."""
    c = chip(image, engine_delay=10)
    hole = blackhole_window(HOST_BYTES)[0]
    setup_queue(c, 0, ring=0x3000, log2=3, cpl=0x7000, window=(hole, 0x100))
    load = dict(host_addr=hole, host_row_stride=4, row_bytes=4, rows=1, planes=1)
    watchdog = 4000
    c.write(R.WATCHDOG, watchdog)
    for limit, status in ((500, ErrorCode.BUS_TIMEOUT), (0, ErrorCode.WATCHDOG)):
        c.write(R.BUS_TIMEOUT, limit)
        i = c.read(R.Q_CONSUMER0)
        c.host_write(0x3000 + 32 * (i % 8), words_bytes(encode(Opcode.DMA_LOAD, tag=i, **load)))
        t0 = c.read(R.TIMESTAMP)
        c.write(R.Q_DOORBELL0, i + 1)
        c.run_until_idle(max_steps=20_000)
        rec = unpack_record(c.host_read(0x7010 + 16 * (i % 8), 16))
        assert rec["status"] == status, (limit, rec)
        waited = rec["timestamp"] - t0
        assert (limit or watchdog) < waited < (limit or watchdog * 17 // 16) + 2000, (limit, waited)
        assert R.Q_STATUS0.HALTED.get(c.read(R.Q_STATUS0)) and c.read(R.Q_ERROR0) == status
        run_sync(reset_queue(0), c)
