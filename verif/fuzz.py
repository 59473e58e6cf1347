"""Malformed-descriptor fuzzing of the command queues, as a device program (``driver.ops``) that
runs on the golden chip model and on the RTL alike.

The run goes in rounds. In each round some queues (1 to 4, at random) each get one fault, while
the other queues run a small random DAG (verif/dag_workload.py):

* a malformed descriptor from :class:`verif.malformed.Malformer` (any class of
  :data:`verif.malformed.FAULTS`, sometimes two faults in one descriptor), placed after the
  queue's own valid work (random jobs, then valid descriptors at the edge of the rules,
  :meth:`~verif.malformed.Malformer.edge`) and before a few more valid jobs; its expected status
  is :func:`verif.malformed.expected_status`'s;
* or, with probability ``p_config``, a queue-configuration fault of :data:`CONFIG_KINDS`
  (misaligned ring or completion area, bad ring size, ring overflow, producer moved backwards,
  DECERR on the descriptor fetch or the completion write), injected by
  :func:`verif.error_injection.inject`.

Each round is a workload run by :func:`verif.chip_scenarios.run_workload`, so the scoreboard
(verif/queue_scoreboard.py) checks it: each faulty queue halts with precisely the expected code
(``Q_ERROR``) at the expected index, the faulty descriptor's record carries it, the valid work
completes bit-exactly, and the **whole host memory** equals the replay of the commands that
completed (filled with random bytes first, so a stray write anywhere shows). Then each faulty
queue is reset (``Q_CTRL.RESET``, waiting for ``RESETTING`` to drop, indices back to 0) and the
next round uses it again. Every wait has a cycle budget and a timeout that names what it waited
for (``ScenarioTimeout`` with the hang report).

Local memory: the skeletons of the malformed descriptors point into **canary** rows that no valid
command uses, zeroed at the start; every ``canary_every`` rounds and at the end the canary rows
are stored to host memory and must still be zero (a malformed command that wrongly ran, even
partly, wrote there).
"""
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from spec.chip import QUEUES
from spec.commands import decode, encode
from spec.descriptors import Opcode
from driver.ops import HostWrite, Write
from golden.ops import SHIFT_MAX

from .chip_scenarios import random_host, run_workload
from .dag_workload import DagBuilder, Failure, build_dag, new_workload, queue_configs
from .error_injection import ERROR_KINDS, inject, widen
from .malformed import DECERR_SLACK, FAULTS, Context, Malformer, dma_extent
from .queue_host import event_bases, reset_queue
from .ring_layout import Layout, reg

#: The queue-configuration faults mixed in (verif/error_injection.py kinds).
CONFIG_KINDS = ("misaligned_ring", "misaligned_cpl", "bad_ring_size", "ring_overflow",
                "producer_backwards", "fetch_decerr", "cpl_decerr")


@dataclass
class FuzzReport:
    """What a fuzzing run did; the scoreboard has checked every round."""
    seed: int
    rounds: int = 0
    descriptors: int = 0          #: descriptors submitted (valid and malformed)
    cycles: int = 0               #: cycles waited
    faults: Counter = field(default_factory=Counter)     #: fault class or config kind -> count
    codes: Counter = field(default_factory=Counter)      #: expected ErrorCode name -> count
    double: int = 0               #: malformed descriptors with two faults

    @property
    def injected(self):
        return sum(self.faults.values())


def shift_rows(caps, q):
    """(good, bad) accumulator rows holding queue ``q``'s requantization shifts (the top rows)."""
    return caps.acc_rows - 1 - 2 * q, caps.acc_rows - 2 - 2 * q


def canary_rows(caps):
    """((spad lo, hi), (acc lo, hi)): local rows above every DagBuilder job region and below the
    shift rows, which no valid command of the fuzzing touches."""
    regions = QUEUES * DagBuilder.REGIONS
    spad = (regions * DagBuilder.spad_region_rows(caps), caps.spad_rows)
    acc = (regions * DagBuilder.ACC_REGION, caps.acc_rows - 2 * QUEUES)
    return spad, acc


def fuzz_scenario(caps, seed, *, host_bytes, faults, decerr_addr=None, p_config=0.1, jobs=1,
                  canary_every=50, poll=200, budget=400_000):
    """Inject ``faults`` faults (malformed descriptors and configuration faults) round after
    round (module doc); returns a :class:`FuzzReport`.

    ``decerr_addr``: where the device's memory starts answering DECERR (the golden chip model:
    ``host_bytes``); ``jobs``: random jobs per queue and round; ``canary_every``: rounds between
    checks of the canary rows (and at the end); ``budget``: cycles per round."""
    rng = np.random.default_rng([seed, 0xF0225])
    decerr = host_bytes if decerr_addr is None else decerr_addr
    layout = Layout(host_bytes)
    image = random_host(seed, host_bytes)
    yield HostWrite(0, image)
    report = FuzzReport(seed)
    spad, acc = canary_rows(caps)
    image = (yield from _local_pass(caps, seed, layout, image, "zero local memory", spad, acc,
                                    zero=True, budget=budget)).host
    while report.injected < faults:
        image = (yield from _round(caps, rng, layout, image, decerr, report,
                                   faults - report.injected, p_config=p_config, jobs=jobs,
                                   poll=poll, budget=budget)).host
        if report.rounds % canary_every == 0 or report.injected >= faults:
            image = (yield from _local_pass(caps, seed, layout, image, f"canary rows still zero "
                                            f"after round {report.rounds - 1}", spad, acc,
                                            zero=False, budget=budget)).host
    return report


def _local_pass(caps, seed, layout, image, name, spad, acc, *, zero, budget):
    """Queue 0 zeroes both local memories (``zero``) or stores the canary rows into host memory,
    where the scoreboard expects the replay's zeros."""
    wl = new_workload(name, caps, seed, layout, [0])
    d = caps.dim
    base = layout.data_base
    if zero:
        for rows, a in ((caps.spad_rows, 0), (caps.acc_rows, 1)):
            wl.add(0, encode(Opcode.DMA_LOAD, rows=rows, planes=1, local_row_stride=1, acc=a))
        window = (base, 0)
    else:
        spad_bytes = (spad[1] - spad[0]) * d
        for (lo, hi), a, row, host in ((spad, 0, d, base), (acc, 1, 4 * d, base + spad_bytes)):
            wl.add(0, encode(Opcode.DMA_STORE, host_addr=host, host_row_stride=row, row_bytes=row,
                             rows=hi - lo, planes=1, local_addr=lo, local_row_stride=1, acc=a))
        window = (base, spad_bytes + (acc[1] - acc[0]) * 4 * d)
        if base + window[1] > layout.host_bytes:
            raise ValueError(f"the canary dump needs {window[1]} bytes of host memory from "
                             f"{base:#x}; raise host_bytes")
    wl.configs = queue_configs(layout, [0], np.random.default_rng(seed), {0: window})
    return (yield from run_workload(wl, host_image=image, budget=budget))


def _round(caps, rng, layout, image, decerr, report, left, *, p_config, jobs, poll, budget):
    n_fail = int(rng.integers(1, min(QUEUES, left) + 1))
    failing = sorted(int(q) for q in rng.choice(QUEUES, size=n_fail, replace=False))
    others = [q for q in range(QUEUES) if q not in failing]
    bases = yield from event_bases()
    wl, b = build_dag(caps, report.seed, layout, queues=others, jobs=jobs * len(others),
                      event_base=bases, name=f"fuzz round {report.rounds}", rng=rng)
    for q in failing:
        wl.failing[q] = _fault(caps, rng, wl, b, q, bases, decerr, report, p_config, jobs)
    rep = yield from run_workload(wl, host_image=image, poll=poll, budget=budget)
    for q in failing:
        yield Write(reg("Q_CTRL", q), 0)
        yield from reset_queue(q, enable=False)
    report.rounds += 1
    report.descriptors += rep.descriptors
    report.cycles += rep.cycles
    return rep


def _fault(caps, rng, wl, b, q, bases, decerr, report, p_config, jobs):
    """Queue ``q``'s stream for a round: its own valid work around one fault; returns the
    Failure the scoreboard must see."""
    own = DagBuilder(wl, rng, [q], bases, p_extra=0.0)
    own.alloc, own.tag = b.alloc, b.tag
    extent = dma_extent(caps)
    spad, acc = canary_rows(caps)
    good, bad = shift_rows(caps, q)
    shifts = {good: rng.integers(0, SHIFT_MAX + 1, caps.dim),
              bad: rng.integers(0, SHIFT_MAX + 1, caps.dim)}
    lanes = rng.random(caps.dim) < 0.3
    lanes[int(rng.integers(caps.dim))] = True
    shifts[bad][lanes] = np.where(rng.random(lanes.sum()) < 0.5,
                                  rng.integers(SHIFT_MAX + 1, 1 << 31, lanes.sum()),
                                  rng.integers(-1 << 31, 0, lanes.sum()))
    for _ in range(int(rng.integers(0, jobs + 1))):
        own.job(q)
    pos = len(wl.streams.setdefault(q, []))
    for _ in range(int(rng.integers(0, 2))):
        own.job(q)
    # Host bytes for the skeletons' DMAs, then the shift rows' data; the window covers them.
    scratch = own.fresh(extent)
    shift_data = own.fresh(8 * caps.dim, np.concatenate([shifts[good], shifts[bad]]).astype("<i4"))
    cfg = widen(queue_configs(wl.layout, [q], rng, own.windows())[q], scratch,
                shift_data + 8 * caps.dim - scratch)
    config_fault = rng.random() < p_config
    cls = None if config_fault else list(FAULTS)[int(rng.integers(len(FAULTS)))]
    if cls == "decerr":
        cfg = widen(cfg, decerr, DECERR_SLACK + extent)
    wl.configs[q] = cfg
    ctx = Context(caps, (cfg.window_base, cfg.window_size), decerr,
                  {r: tuple(int(v) for v in s) for r, s in shifts.items()})
    mal = Malformer(rng, ctx, spad=spad, acc=acc, scratch=(scratch, scratch + extent),
                    good_shift=good, bad_shift=bad, decerr=decerr)
    # Valid descriptors at the edge of the rules just before the fault (at least one: a ring
    # overflow comes after the first doorbell).
    for _ in range(int(rng.integers(0 if pos else 1, 3))):
        wl.insert(q, pos, mal.edge())
        pos += 1
    if config_fault:
        kind = CONFIG_KINDS[int(rng.integers(len(CONFIG_KINDS)))]
        report.faults[kind] += 1
        report.codes[ERROR_KINDS[kind].name] += 1
        return inject(kind, wl, own, q, pos, decerr, hole_addr=None)   # no timeout kinds here
    words, code, applied = mal.fault(cls)
    if decode(words)["opcode"] == Opcode.VECTOR:       # load the shift rows it may read first
        wl.insert(q, pos, encode(Opcode.BARRIER, tag=own._next_tag()))
        for i, row in enumerate((bad, good)):
            wl.insert(q, pos, encode(Opcode.DMA_LOAD, tag=own._next_tag(), host_addr=shift_data
                                     + 4 * caps.dim * (1 - i), host_row_stride=4 * caps.dim,
                                     row_bytes=4 * caps.dim, rows=1, planes=1, local_addr=row,
                                     acc=1))
        pos += 3
    wl.insert(q, pos, words)
    report.faults[cls] += 1
    report.codes[code.name] += 1
    report.double += len(applied) > 1
    return Failure(code, pos)
