"""The host side of the command queues as a scenario program (driver-neutral): configure a queue,
reset it, and :func:`drive` a workload — write descriptors into ring slots as the consumer index
frees them (rings wrap), ring doorbells, collect completion records before their slots are reused.

These are generators of device operations (``driver.ops``: Read, Write, HostRead, HostWrite,
Wait) run by :func:`driver.ops.run_sync` on the golden chip model or :func:`driver.ops.run_async`
on a cocotb testbench. This is a second, deliberately independent host queue driver next to the
product's (``driver/device.py``): it submits hand-built descriptor streams, including illegal
ones (bad doorbells, misconfigured rings), which the product driver refuses to produce.
"""
import numpy as np

from spec import registers as R
from spec.chip import EVENTS
from spec.completion import RECORD_BYTES, unpack_record
from driver.forensics import hang_report
from driver.ops import HostRead, HostWrite, Read, Wait, Write

from .ring_layout import DESC_BYTES, M32, in_host, reg
from .queue_scoreboard import ScoreboardError


class ScenarioTimeout(AssertionError):
    """The device did not finish the scenario within its cycle budget."""


def configure(q, cfg, enable=True):
    """Program queue ``q`` (ring, completion area, window) and optionally enable it."""
    yield Write(reg("Q_RING_BASE", q), cfg.ring_base)
    yield Write(reg("Q_RING_SIZE", q), R.Q_RING_SIZE0.LOG2.put(cfg.log2 & 0xF))
    yield Write(reg("Q_CPL_BASE", q), cfg.cpl_base)
    yield Write(reg("Q_WINDOW_BASE", q), cfg.window_base)
    yield Write(reg("Q_WINDOW_SIZE", q), cfg.window_size)
    if enable:
        yield Write(reg("Q_CTRL", q), R.Q_CTRL0.ENABLE.put(1))


def reset_queue(q, enable=True, budget=200_000, poll=200):
    """Reset queue ``q`` (ENABLE as given) and wait for RESETTING to drop; check the zeroed state."""
    yield Write(reg("Q_CTRL", q), R.Q_CTRL0.RESET.put(1) | R.Q_CTRL0.ENABLE.put(int(enable)))
    waited = 0
    while R.Q_STATUS0.RESETTING.get((yield Read(reg("Q_STATUS", q)))):
        if waited > budget:
            raise ScenarioTimeout(f"queue {q} still RESETTING after {waited} cycles")
        yield Wait(poll)
        waited += poll
    for name in ("Q_CONSUMER", "Q_FETCH", "Q_ERROR", "Q_ERROR_INDEX"):
        v = yield Read(reg(name, q))
        if v:
            raise ScoreboardError(f"after the reset of queue {q}, {name} = {v:#x}, not 0")
    status = R.Q_STATUS0.decode((yield Read(reg("Q_STATUS", q))))
    if status["HALTED"] or status["PREFETCHED"] or status["ACTIVE"] != int(enable):
        raise ScoreboardError(f"after the reset of queue {q}: Q_STATUS {status}")


def drive(wl, *, poll=400, budget=3_000_000):
    """Submit ``wl`` and collect its records; returns (records, consumer, base, cycles, producer)
    per queue (cycles: total).

    Per queue: descriptors go to ring slots as the consumer index frees them (so rings wrap), the
    doorbell follows each batch; records are read between the consumer index already seen and the
    new one before their slots can be reused. The run ends when every queue retired all its
    descriptors, or (an expected failure) halted with the chip idle, its consumer index still and
    equal to the descriptors the firmware popped (``Q_FETCH - Q_STATUS.PREFETCHED``: commands
    forwarded before the halt finish and get records after it).
    """
    name = f"{wl.name} seed={wl.seed}"
    queues = sorted(wl.streams)
    for addr, data in sorted(wl.init.items()):
        yield HostWrite(addr, data)
    base, prod, seen, records = {}, {}, {}, {q: {} for q in queues}
    cpl_readable = {}
    for q in queues:
        cfg = wl.configs[q]
        c = yield Read(reg("Q_CONSUMER", q))
        base[q] = prod[q] = seen[q] = c
        cpl_readable[q] = in_host(wl.layout, cfg.cpl_base, cfg.cpl_bytes())
        if cpl_readable[q]:
            # The device writes the consumer index only after a retirement: start it at C.
            yield HostWrite(cfg.cpl_base, c.to_bytes(4, "little"))
        for i, dsc in enumerate(wl.streams[q]):
            dsc.index = (c + i) & M32
    bad = dict(wl.bad_doorbell)
    # Some queues ring their first doorbell with one descriptor (occupancy 1), the rest as many
    # as the ring holds; from a stream of its own, so the workload's choices do not change.
    pick = np.random.default_rng([wl.seed, 0x1D00])
    single = {q: bool(pick.random() < 0.5) for q in queues}
    cycles, stable = 0, {q: 0 for q in queues}
    while True:
        finished = True
        for q in queues:
            cfg, stream = wl.configs[q], wl.streams[q]
            if cpl_readable[q] and q not in wl.failing:
                c = int.from_bytes((yield HostRead(cfg.cpl_base, 4)), "little")
            else:
                c = yield Read(reg("Q_CONSUMER", q))
            n = (c - seen[q]) & M32
            if n > (prod[q] - seen[q]) & M32:
                raise ScoreboardError(f"{name}: queue {q} consumer index {c} beyond the producer "
                                      f"{prod[q]} (seen {seen[q]})")
            for i in range(n):
                idx = (seen[q] + i) & M32
                if cpl_readable[q]:
                    records[q][idx] = unpack_record((yield HostRead(cfg.record_addr(idx), RECORD_BYTES)))
            seen[q] = c
            done = (prod[q] - base[q]) & M32
            halted = drained = False
            if q in wl.failing:
                st = R.Q_STATUS0.decode((yield Read(reg("Q_STATUS", q))))
                halted = bool(st["HALTED"])
                if halted:
                    # Commands the firmware popped before the halt still finish and get records
                    # (docs/queues.md): wait for C to reach the popped ones, F - PREFETCHED.
                    popped = ((yield Read(reg("Q_FETCH", q))) - st["PREFETCHED"]) & M32
                    drained = c == popped
            # Quiet polls counted only while halted: the consumer was read before Q_STATUS, so the
            # poll that first sees the halt may predate the retirement that halted the queue.
            stable[q] = stable[q] + 1 if n == 0 and halted else 0
            if q in bad and done >= bad[q][0]:
                how = bad.pop(q)[1]
                # Too far ahead of any consumer index, or behind the first one of the run.
                p_bad = (prod[q] + how if how > 0 else base[q] - 1) & M32
                wl.failing[q].index = ("value", p_bad)
                yield Write(reg("Q_DOORBELL", q), p_bad)
            elif not halted and done < len(stream) and (q in bad or q not in wl.bad_doorbell):
                end = min(len(stream), ((c - base[q]) & M32) + cfg.entries)
                if q in bad:
                    end = min(end, bad[q][0])
                if single.pop(q, False):
                    end = min(end, done + 1)
                for i in range(done, end):
                    if in_host(wl.layout, cfg.ring_base, cfg.entries * DESC_BYTES):
                        yield HostWrite(cfg.ring_base + DESC_BYTES * ((base[q] + i) % cfg.entries),
                                        b"".join(w.to_bytes(4, "little") for w in stream[i].words))
                if end > done:
                    prod[q] = (base[q] + end) & M32
                    yield Write(reg("Q_DOORBELL", q), prod[q])
            if q in wl.failing:
                # Halted, quiet and drained; or, wrongly, everything retired (the scoreboard says so).
                finished &= (halted and stable[q] >= 2 and drained) or ((c - base[q]) & M32) == len(stream)
            else:
                finished &= ((c - base[q]) & M32) == len(stream)
        if finished:
            idle = R.STATUS.IDLE.get((yield Read(R.STATUS)))
            if idle:
                break
        if cycles > budget:
            progress = "; ".join(f"q{q}: C={seen[q]} P={prod[q]} of {len(wl.streams[q])}"
                                 for q in queues)
            report = yield from hang_report()
            raise ScenarioTimeout(f"{name}: not finished after {cycles} cycles ({progress})\n{report}")
        yield Wait(poll)
        cycles += poll
    return records, seen, base, cycles, prod


def final_regs(queues, perf_before):
    regs = {}
    for q in queues:
        for name in ("Q_CONSUMER", "Q_ERROR", "Q_ERROR_INDEX", "Q_STATUS", "PERF_Q_RETIRED"):
            regs[f"{name}{q}"] = yield Read(reg(name, q))
        regs[f"PERF_Q_RETIRED{q}"] = (regs[f"PERF_Q_RETIRED{q}"] - perf_before[q]) & M32
    regs["IRQ_STATUS"] = yield Read(R.IRQ_STATUS)
    return regs


def event_bases():
    bases = {}
    for e in range(EVENTS):
        bases[e] = yield Read(reg("EVENT", e))
    return bases
