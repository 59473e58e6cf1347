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
from spec.descriptors import COMMANDS, ENGINE_OPCODES
from driver.ops import HostRead, HostWrite, Read, Write

from .dag_workload import DagBuilder, build_dag, queue_configs
from .error_injection import ERROR_KINDS, error_queue, inject
from .queue_host import configure, drive, event_bases, final_regs, reset_queue
from .queue_scoreboard import ScoreboardError, check
from .ring_layout import DESC_BYTES, M32, Layout, in_host, reg

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


def error_scenario(caps, seed, kind, *, host_bytes, decerr_addr=None, queue=None, jobs=24,
                   poll=400, budget=3_000_000, watchdog=4000):
    """Inject error ``kind`` (a key of :data:`ERROR_KINDS`) on one queue while the others run a
    DAG; check the halt, the error record and QUEUE_ERROR; reset the queue (fixing its
    configuration) and run a fresh workload on it from index 0.

    ``queue``: the failing queue; by default :func:`error_queue` (rotated by the seed).

    ``decerr_addr``: a host address whose accesses the device's memory answers with DECERR (the
    golden model: anything at or beyond ``host_bytes``). ``watchdog``: WATCHDOG.CYCLES for the
    hang kinds (the default watchdog is 10**6 cycles)."""
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown error kind {kind!r}; kinds: {sorted(ERROR_KINDS)}")
    rng = np.random.default_rng(seed)
    q = error_queue(seed) if queue is None else queue
    if decerr_addr is None:
        decerr_addr = host_bytes
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
    wl.failing[q] = inject(kind, wl, own, q, pos, decerr_addr)
    if hang:
        yield Write(R.WATCHDOG, watchdog)
        yield Write(R.DEBUG_HANG, R.DEBUG_HANG.GEMM.put(1) if kind == "watchdog_gemm" else R.DEBUG_HANG.VEC.put(1))
    report = yield from run_workload(wl, host_image=image, poll=poll, budget=budget)
    if hang:
        yield Write(R.WATCHDOG, R.WATCHDOG.CYCLES.reset)
    # ---- reset the failed queue with a sound configuration and run again from index 0
    yield Write(reg("Q_CTRL", q), 0)
    wl2, _ = build_dag(caps, seed + 1, layout, queues=[q], jobs=max(4, jobs // 4),
                       event_base=(yield from event_bases()), name=f"after {kind} on queue {q}")
    yield from configure(q, wl2.configs[q], enable=False)
    yield from reset_queue(q, enable=True)
    irq = yield Read(R.IRQ_STATUS)
    if R.IRQ_STATUS.QUEUE_ERROR.get(irq) >> q & 1:
        raise ScoreboardError(f"{wl.name} seed={seed}: QUEUE_ERROR[{q}] still set after W1C")
    report.phases.append((yield from run_workload(wl2, poll=poll, budget=budget)))
    return report
