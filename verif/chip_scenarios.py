"""Command-queue scenarios, driver-neutral: the same code drives the golden chip model
(tests/test_chip_model.py) and the RTL chip (cocotb_tests/cocotb_chip_queues.py, the pyuvm
environment).

A scenario is a generator of device operations (:class:`Read`, :class:`Write`, :class:`HostRead`,
:class:`HostWrite`, :class:`Wait` of ``driver.ops``); a runner executes them on a device and sends
results back:

* :func:`driver.ops.run_sync` for synchronous devices such as :class:`golden.chip_model.ChipModel`;
* :func:`driver.ops.run_async` for a cocotb testbench (``await run_async(scenario, dev)``).

A device offers ``read(reg) -> int``, ``write(reg, value)`` (``spec.registers`` Registers),
``host_read(addr, n) -> bytes``, ``host_write(addr, data)`` and ``wait(cycles)`` (let the chip run
about that many clock cycles); for :func:`run_async` each of them is awaitable.

Scenarios (each returns a :class:`Report` and raises
:class:`~verif.queue_scoreboard.ScoreboardError` on any mismatch):

* :func:`dag_scenario` — random jobs (DMA copies host→local→host, GEMM + vector epilogues) on all
  queues with a random DAG of SIGNAL_EVENT/WAIT_EVENT edges and BARRIERs, rings that wrap;
* :func:`error_scenario` — one error class (:data:`verif.error_injection.ERROR_KINDS`) injected on
  one queue while the others run a DAG; checks Q_ERROR, Q_ERROR_INDEX, the error record and
  QUEUE_ERROR, then resets the queue and runs a fresh workload on it from index 0.

The parts: verif/ring_layout.py (host memory layout, queue configuration), verif/dag_workload.py
(the random workload builder), verif/queue_host.py (the host queue driver),
verif/queue_scoreboard.py (the checks), verif/error_injection.py (the error classes).
Every random choice comes from ``seed``; a failure message starts with the scenario and seed.
"""
from dataclasses import dataclass, field

import numpy as np

from spec import registers as R
from spec.chip import QUEUES
from spec.commands import encode
from spec.descriptors import COMMANDS, ENGINE_OPCODES, ErrorCode, Opcode
from driver.ops import HostRead, HostWrite, Read, Write

from .dag_workload import DagBuilder, Failure, HostAlloc, build_dag, new_workload, queue_configs
from .error_injection import (BUS_TIMEOUT_CYCLES, ERROR_KINDS, TIMEOUT_KINDS, blackhole_window,
                              error_queue, inject)
from .queue_host import configure, drive, event_bases, final_regs, reset_queue
from .queue_scoreboard import ScoreboardError, check
from .ring_layout import DESC_BYTES, M32, Layout, in_host, reg, ts_after

#: Engines the DEBUG_HANG fault-injection hook can freeze (its fields are named after them).
_HANGABLE = {f.name for f in R.DEBUG_HANG.fields}


@dataclass
class Report:
    """What a scenario observed; the scoreboard has already checked it."""
    name: str
    seed: int
    records: dict            #: queue -> {index: record dict}
    consumer: dict           #: queue -> final consumer index
    base: dict               #: queue -> first index of the run
    cycles: int              #: cycles waited
    descriptors: int         #: descriptors submitted
    phases: list = field(default_factory=list)   #: reports of later phases
    host: bytes = None       #: the whole host memory at the end (as the scoreboard checked it)


def run_workload(wl, *, host_image=None, poll=400, budget=3_000_000):
    """Configure the workload's queues, run it, check it; returns a :class:`Report`.

    ``host_image``: the whole initial host memory (bytes); if None it is read from the device."""
    queues = sorted(wl.streams)
    if host_image is None:
        host_image = yield HostRead(0, wl.layout.host_bytes)
    image = bytearray(host_image)
    for addr, data in wl.init.items():
        image[addr:addr + len(data)] = data
    irq_bits = R.IRQ_STATUS.QUEUE_CPL.mask | R.IRQ_STATUS.QUEUE_ERROR.mask
    yield Write(R.IRQ_STATUS, irq_bits)          # W1C: start from clear queue interrupts
    for q in queues:
        # A queue left enabled by an earlier workload is disabled first: its configuration is
        # checked only when it becomes active (docs/queues.md); its indices carry on.
        if R.Q_CTRL0.ENABLE.get((yield Read(reg("Q_CTRL", q)))):
            yield Write(reg("Q_CTRL", q), 0)
        yield from configure(q, wl.configs[q])
    perf = {}
    for q in queues:
        perf[q] = yield Read(reg("PERF_Q_RETIRED", q))
    records, consumer, base, cycles, producer = yield from drive(wl, poll=poll, budget=budget)
    regs = yield from final_regs(queues, perf)
    # The rings hold what the host wrote last: part of the expected image.
    for q in queues:
        cfg = wl.configs[q]
        if not in_host(wl.layout, cfg.ring_base, cfg.entries * DESC_BYTES):
            continue
        written = (producer[q] - base[q]) & M32
        for i in range(max(0, written - cfg.entries), written):
            a = cfg.ring_base + DESC_BYTES * ((base[q] + i) % cfg.entries)
            image[a:a + DESC_BYTES] = b"".join(w.to_bytes(4, "little") for w in wl.streams[q][i].words)
    after = yield HostRead(0, wl.layout.host_bytes)
    check(wl, records, consumer, base, np.frombuffer(bytes(image), dtype=np.uint8), after, regs)
    yield Write(R.IRQ_STATUS, regs["IRQ_STATUS"])          # W1C acknowledge what we saw
    return Report(wl.name, wl.seed, records, consumer, base, cycles,
                  sum(len(s) for s in wl.streams.values()), host=bytes(after))


def random_host(seed, host_bytes):
    return np.random.default_rng([seed, 0x4B414B49]).integers(0, 256, host_bytes, dtype=np.uint8).tobytes()


def dag_scenario(caps, seed, *, host_bytes, jobs=40, queues=tuple(range(QUEUES)), poll=400,
                 budget=3_000_000, fill_host=True, knobs=None):
    """Random jobs with a random DAG on ``queues``; every descriptor must complete with OK.

    ``fill_host``: first fill the whole host memory with seeded random bytes, so any stray write
    anywhere is caught. ``knobs``: the DagBuilder's dependency/compute/extra-edge probabilities."""
    layout = Layout(host_bytes)
    image = None
    if fill_host:
        image = random_host(seed, host_bytes)
        yield HostWrite(0, image)
    bases = yield from event_bases()
    wl, _ = build_dag(caps, seed, layout, queues=queues, jobs=jobs, event_base=bases, knobs=knobs)
    return (yield from run_workload(wl, host_image=image, poll=poll, budget=budget))


def error_scenario(caps, seed, kind, *, host_bytes, decerr_addr=None, blackhole=None, queue=None,
                   jobs=24, poll=400, budget=3_000_000, watchdog=4000):
    """Inject error ``kind`` (a key of :data:`ERROR_KINDS`) on one queue while the others run a
    DAG; check the halt, the error record and QUEUE_ERROR; reset the queue (fixing its
    configuration) and run a fresh workload on it from index 0.

    ``queue``: the failing queue; by default :func:`error_queue` (rotated by the seed).

    ``decerr_addr``: a host address whose accesses the device's memory answers with DECERR (the
    golden model: anything at or beyond ``host_bytes``). ``blackhole``: ``(base, limit)`` of host
    memory the device's memory never answers (default
    :func:`~verif.error_injection.blackhole_window`; the caller sets the device up with it), for
    the timeout kinds, which run with BUS_TIMEOUT.CYCLES = ``BUS_TIMEOUT_CYCLES``. ``watchdog``:
    WATCHDOG.CYCLES for the hang kinds (the default watchdog is 10**6 cycles)."""
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown error kind {kind!r}; kinds: {sorted(ERROR_KINDS)}")
    rng = np.random.default_rng(seed)
    q = error_queue(seed) if queue is None else queue
    if decerr_addr is None:
        decerr_addr = host_bytes
    if blackhole is None:
        blackhole = blackhole_window(host_bytes)
    layout = Layout(host_bytes)
    image = random_host(seed, host_bytes)
    yield HostWrite(0, image)
    bases = yield from event_bases()
    hang = kind.startswith("watchdog")
    # The background must not use an engine DEBUG_HANG can freeze: the first command the frozen
    # engine starts after DEBUG_HANG must be the injected one.
    engines = tuple(op for op in ENGINE_OPCODES if COMMANDS[op].engine.name not in _HANGABLE) \
        if hang else ENGINE_OPCODES
    others = [x for x in range(QUEUES) if x != q]
    wl, b = build_dag(caps, seed, layout, queues=others, jobs=jobs, event_base=bases,
                      name=f"error {kind} on queue {q}", engines=engines, rng=rng)
    # The failing queue: jobs of its own (no event edges to the others), the fault in between.
    own = DagBuilder(wl, rng, [q], bases, p_extra=0.0, engines=engines)
    own.alloc, own.tag = b.alloc, b.tag
    for _ in range(int(rng.integers(1, 4))):
        own.job(q)
    pos = len(wl.streams[q])
    for _ in range(int(rng.integers(0, 3))):
        own.job(q)
    wl.configs.update(queue_configs(layout, [q], rng, own.windows()))
    wl.failing[q] = inject(kind, wl, own, q, pos, decerr_addr, blackhole[0])
    if hang:
        yield Write(R.WATCHDOG, watchdog)
        yield Write(R.DEBUG_HANG, R.DEBUG_HANG.GEMM.put(1) if kind == "watchdog_gemm" else R.DEBUG_HANG.VEC.put(1))
    if kind in TIMEOUT_KINDS:
        yield Write(R.BUS_TIMEOUT, BUS_TIMEOUT_CYCLES)
    report = yield from run_workload(wl, host_image=image, poll=poll, budget=budget)
    if hang:
        yield Write(R.WATCHDOG, R.WATCHDOG.CYCLES.reset)
    if kind in TIMEOUT_KINDS:
        yield Write(R.BUS_TIMEOUT, R.BUS_TIMEOUT.CYCLES.reset)
    report.phases.append((yield from recover(caps, seed, layout, q, f"after {kind} on queue {q}",
                                             jobs=max(4, jobs // 4), poll=poll, budget=budget)))
    return report


def recover(caps, seed, layout, q, name, *, jobs, poll, budget):
    """Reset the failed queue ``q`` with a sound configuration and run a fresh DAG on it from
    index 0; returns its Report."""
    yield Write(reg("Q_CTRL", q), 0)
    wl, _ = build_dag(caps, seed + 1, layout, queues=[q], jobs=jobs,
                      event_base=(yield from event_bases()), name=name)
    yield from configure(q, wl.configs[q], enable=False)
    yield from reset_queue(q, enable=True)
    irq = yield Read(R.IRQ_STATUS)
    if R.IRQ_STATUS.QUEUE_ERROR.get(irq) >> q & 1:
        raise ScoreboardError(f"{name} seed={seed}: QUEUE_ERROR[{q}] still set after W1C")
    return (yield from run_workload(wl, poll=poll, budget=budget))


def dma_watchdog_scenario(caps, seed, *, host_bytes, blackhole=None, hung=None, commands=6,
                          rows=16, watchdog=3000, poll=200, budget=3_000_000):
    """The firmware's watchdog resets only the hung DMA channel (docs/queues.md "Firmware", step 1).

    With BUS_TIMEOUT.CYCLES = 0 (no bus timeout), a DMA command of queue A (``hung``: "load" or
    "store", by default from the seed) reaches the black hole (``blackhole``, default
    :func:`~verif.error_injection.blackhole_window`; the caller sets the device up with it) and
    waits forever. Queue B meanwhile keeps the other channel busy with a chain of ``commands``
    commands of ``rows`` accumulator rows each, each shorter than ``watchdog`` (WATCHDOG.CYCLES)
    and together longer: the watchdog resets the hung channel (ENGINE_RESET of it alone) while a
    command of the chain runs. Checked: queue A halts with WATCHDOG at the hung command; every
    command of queue B completes OK with the golden model's bytes (the scoreboard's replay, the
    whole host memory), and two consecutive records of the chain straddle the WATCHDOG record
    (the reset hit the chain with a command in flight). Queue A is then reset and runs again.

    Queue B's data: for a hung load, the chain are stores of rows queue B loaded first (then a
    SIGNAL_EVENT releases queue A's WAIT_EVENT, so the hang starts with the chain); for a hung
    store, the chain are loads, read back by stores once the store channel has been reset."""
    rng = np.random.default_rng(seed)
    hung = hung or ("load", "store")[seed % 2]
    qa = error_queue(seed)
    qb = (qa + 1) % QUEUES
    blackhole = blackhole or blackhole_window(host_bytes)
    layout = Layout(host_bytes)
    wl = new_workload(f"{hung} channel hung on queue {qa}", caps, seed, layout, (qa, qb))
    alloc = HostAlloc(rng, layout.data_base, layout.host_bytes)
    rb = 4 * caps.dim                  # an accumulator row
    chunk = rows * rb
    if (commands + 1) * rows > caps.acc_rows:
        raise ValueError(f"{commands} commands of {rows} rows do not fit {caps.acc_rows} accumulator rows")
    src = [alloc.take(chunk, 8) for _ in range(commands)]
    dst = [alloc.take(chunk, 8) for _ in range(commands)]
    for a in src:
        wl.init[a] = rng.integers(0, 256, chunk, dtype=np.uint8).tobytes()

    def dma(op, host, row, n=rows, tag=0):
        return encode(op, tag=tag, host_addr=host, host_row_stride=rb, row_bytes=rb, rows=n,
                      planes=1, local_addr=row, local_row_stride=1, acc=1)
    event = qb
    value = ((yield from event_bases())[event] + 1) & M32
    if hung == "load":                 # the chain's data, before the hang
        for i in range(commands):
            wl.add(qb, dma(Opcode.DMA_LOAD, src[i], i * rows, tag=i))
    signal = wl.add(qb, encode(Opcode.SIGNAL_EVENT, tag=0x100, event=event, value=value))
    chain = [wl.add(qb, dma(Opcode.DMA_STORE, dst[i], i * rows, tag=0x200 + i) if hung == "load"
                    else dma(Opcode.DMA_LOAD, src[i], i * rows, tag=0x200 + i))
             for i in range(commands)]
    if hung == "store":                # the chain's loads read back, after the reset
        wl.add(qb, encode(Opcode.BARRIER, tag=0x300))
        for i in range(commands):
            wl.add(qb, dma(Opcode.DMA_STORE, dst[i], i * rows, tag=0x400 + i))
    wait = wl.add(qa, encode(Opcode.WAIT_EVENT, tag=0x500, event=event, value=value))
    wl.edges.append((signal, wait))
    op = Opcode.DMA_LOAD if hung == "load" else Opcode.DMA_STORE
    bad = wl.add(qa, dma(op, blackhole[0], commands * rows, n=1, tag=0x600),
                 expect=ErrorCode.WATCHDOG)
    wl.failing[qa] = Failure(ErrorCode.WATCHDOG, wl.streams[qa].index(bad))
    wl.configs = queue_configs(layout, (qa, qb), rng, {
        qa: (blackhole[0], rb), qb: (min(src + dst), max(src + dst) + chunk - min(src + dst))})
    image = random_host(seed, host_bytes)
    yield HostWrite(0, image)
    yield Write(R.BUS_TIMEOUT, 0)
    yield Write(R.WATCHDOG, watchdog)
    report = yield from run_workload(wl, host_image=image, poll=poll, budget=budget)
    yield Write(R.WATCHDOG, R.WATCHDOG.CYCLES.reset)
    yield Write(R.BUS_TIMEOUT, R.BUS_TIMEOUT.CYCLES.reset)
    t_reset = report.records[qa][bad.index]["timestamp"]
    ts = [report.records[qb][d.index]["timestamp"] for d in chain]
    if not any(ts_after(t_reset, a) and ts_after(b, t_reset) for a, b in zip(ts, ts[1:])):
        raise ScoreboardError(f"{wl.name} seed={seed}: the WATCHDOG record (timestamp {t_reset}) "
                              f"is not between two records of the {len(chain)}-command chain "
                              f"(timestamps {ts}): the reset did not hit it in flight")
    report.phases.append((yield from recover(caps, seed, layout, qa, f"after the hung {hung} on "
                                             f"queue {qa}", jobs=4, poll=poll, budget=budget)))
    return report
