"""Hang forensics: what a stuck device is doing, read through its registers and host memory only.

:func:`hang_report` is a device program (driver/ops.py), so the same code runs on the RTL
(``run_async``), the golden chip model (``run_sync``), inside the queue scenarios (``yield
from``) and in the driver's timeouts (``DeviceTimeout.state``). It returns a :class:`HangReport`
whose ``str()`` is the multi-line report:

* time (``TIMESTAMP``), firmware state and sleep flag, the control core's pc (``CORE_PC``), the
  fault pc/cause when the firmware faulted;
* engines busy/idle (``STATUS``), busy-cycle counters, armed fault injection (``DEBUG_HANG``);
* interrupts pending and enabled;
* every event counter;
* per enabled queue: producer P (doorbell), fetch F, consumer C, status, error; the descriptor at
  the head; for a queue held on a WAIT_EVENT, the event, the value awaited and the counter now,
  and which queued SIGNAL_EVENT (queue, index) would release it, or that none would (a deadlock
  until one is submitted; EVENT counters are read-only to the host); the last ``last`` retired and the next queued descriptors, decoded.
"""
from dataclasses import dataclass, field

from spec import registers as R
from spec.commands import decode
from spec.chip import EVENTS, QUEUES
from spec.descriptors import Engine, Opcode
from spec.firmware_image import FirmwareState
from .ops import HostRead, Read
from .program import reached

__all__ = ["hang_report", "HangReport", "QueueState"]

M32 = 0xFFFF_FFFF
DESC_BYTES = 32
#: Engines by name, in engine-index order (STATUS.<name>_BUSY, PERF_<name>_BUSY).
ENGINES = tuple(e.name for e in Engine)


def _reg(name, i):
    return R.REGISTERS[f"{name}{i}"]


def describe_descriptor(words):
    """One line: opcode, tag, irq flag and the non-zero payload fields."""
    d = decode(words)
    op = d["opcode"]
    name = op.name if isinstance(op, Opcode) else f"opcode {op:#x}"
    skip = {"opcode", "flags.irq", "flags.reserved", "tag"}
    fields = " ".join(f"{k}={v:#x}" if v > 9 else f"{k}={v}" for k, v in d.items()
                      if k not in skip and v)
    return f"{name} tag={d['tag']}{' irq' if d['flags.irq'] else ''} {fields}".rstrip()


@dataclass
class QueueState:
    queue: int
    producer: int
    fetch: int
    consumer: int
    status: dict
    error: int
    error_index: int
    descriptors: dict = field(default_factory=dict)   #: index -> 8 words (around C)
    waits_on: tuple = None      #: (index, event, value, counter now) when held on a WAIT_EVENT
    released_by: list = field(default_factory=list)   #: [(queue, index)] of queued SIGNALs

    def lines(self, entries):
        st = ",".join(k for k, v in self.status.items() if v and k != "PREFETCHED") or "idle"
        out = [f"queue {self.queue}: P={self.producer} F={self.fetch} C={self.consumer} "
               f"({(self.producer - self.consumer) & M32}/{entries} queued) status={st} "
               f"prefetched={self.status.get('PREFETCHED', 0)}"
               + (f" error={self.error}@{self.error_index}" if self.error else "")]
        if self.waits_on:
            i, e, v, now = self.waits_on
            who = ", ".join(f"queue {q} index {j}" for q, j in self.released_by) or \
                "no queued SIGNAL_EVENT (deadlock unless one is submitted; a queue reset drops it)"
            out.append(f"  index {i} waits on EVENT{e} >= {v} (now {now}); released by: {who}")
        rel = lambda i: ((i - self.consumer + (1 << 31)) & M32) - (1 << 31)   # noqa: E731
        for i, words in sorted(self.descriptors.items(), key=lambda kv: rel(kv[0])):
            tag = "head" if rel(i) == 0 else "queued" if rel(i) > 0 else "retired"
            out.append(f"  [{i:>6}] {tag:<7} {describe_descriptor(words)}")
        return out


@dataclass
class HangReport:
    timestamp: int
    firmware: dict
    core_pc: int
    fault: tuple
    engines: dict               #: engine -> busy flag
    busy_cycles: dict
    debug_hang: dict
    irq_status: int
    irq_enable: int
    events: list
    queues: list                #: QueueState of each enabled queue
    entries: dict               #: queue -> ring entries

    def __str__(self):
        state = self.firmware.get("STATE")
        fw = (FirmwareState(state).name if state in set(FirmwareState) else f"state {state}") + \
            (", sleeping" if self.firmware.get("SLEEPING") else ", running")
        lines = [f"hang report at TIMESTAMP={self.timestamp}",
                 f"firmware: {fw}; control core pc={self.core_pc:#010x}"
                 + (f"; fault pc={self.fault[0]:#x} cause={self.fault[1]}" if self.fault else ""),
                 "engines: " + ", ".join(f"{e} {'BUSY' if b else 'idle'} ({self.busy_cycles[e]} busy "
                                         f"cycles)" for e, b in self.engines.items())
                 + ("; DEBUG_HANG armed: " + ",".join(k for k, v in self.debug_hang.items() if v)
                    if any(self.debug_hang.values()) else ""),
                 f"interrupts: IRQ_STATUS={self.irq_status:#x} IRQ_ENABLE={self.irq_enable:#x}",
                 "events: " + " ".join(f"E{i}={v}" for i, v in enumerate(self.events))]
        for q in self.queues:
            lines += q.lines(self.entries[q.queue])
        if not self.queues:
            lines.append("no queue enabled")
        return "\n".join(lines)


def _get(reg):
    return (yield Read(reg))


def _read_ring(ring, entries, index):
    raw = yield HostRead(ring + DESC_BYTES * (index % entries), DESC_BYTES)
    return [int.from_bytes(raw[4 * w:4 * w + 4], "little") for w in range(8)]


def _queue(q, last, ahead):
    g = {}
    for n in ("Q_DOORBELL", "Q_FETCH", "Q_CONSUMER", "Q_STATUS", "Q_ERROR", "Q_ERROR_INDEX",
              "Q_RING_BASE", "Q_RING_SIZE"):
        g[n] = yield Read(_reg(n, q))
    entries = 1 << g["Q_RING_SIZE"]
    s = QueueState(q, g["Q_DOORBELL"], g["Q_FETCH"], g["Q_CONSUMER"], R.Q_STATUS0.decode(g["Q_STATUS"]),
                   g["Q_ERROR"], g["Q_ERROR_INDEX"])
    queued = min((s.producer - s.consumer) & M32, entries)
    for k in range(-min(last, entries - queued, s.consumer), min(queued, ahead)):
        i = (s.consumer + k) & M32
        s.descriptors[i] = yield from _read_ring(g["Q_RING_BASE"], entries, i)
    return s, entries, g["Q_RING_BASE"]


def _who_releases(states, rings, event, value):
    """Queued (not retired) SIGNAL_EVENTs on ``event`` with a value that satisfies the wait."""
    out = []
    for s in states:
        ring, entries = rings[s.queue]
        for k in range(min((s.producer - s.consumer) & M32, entries)):
            i = (s.consumer + k) & M32
            d = decode((yield from _read_ring(ring, entries, i)))
            if d["opcode"] == Opcode.SIGNAL_EVENT and d["event"] == event and reached(d["value"], value):
                out.append((s.queue, i))
    return out


def _blocking_wait(s, states, rings, events):
    """The first fetched, unsatisfied WAIT_EVENT of a WAITING queue (earlier descriptors may still
    be in flight, so it need not be the head) and the queued SIGNALs that would release it."""
    ring, entries = rings[s.queue]
    for k in range(min((s.fetch - s.consumer) & M32, entries)):
        i = (s.consumer + k) & M32
        d = decode((yield from _read_ring(ring, entries, i)))
        if d["opcode"] == Opcode.WAIT_EVENT and not reached(events[d["event"]], d["value"]):
            s.waits_on = (i, d["event"], d["value"], events[d["event"]])
            s.released_by = yield from _who_releases(states, rings, d["event"], d["value"])
            return


def hang_report(last=4, ahead=4):
    """Device program: the state of the whole device (see the module doc)."""
    read = _get
    fw = R.FW_STATUS.decode((yield from read(R.FW_STATUS)))
    core_pc = yield from read(R.CORE_PC)
    fault = None
    if fw.get("STATE") == int(FirmwareState.FAULT):
        fault = ((yield from read(R.FW_FAULT_PC)), (yield from read(R.FW_FAULT_CAUSE)))
    status = R.STATUS.decode((yield from read(R.STATUS)))
    engines = {e: status[f"{e}_BUSY"] for e in ENGINES}
    busy = {}
    for e in ENGINES:
        busy[e] = yield from read(R.REGISTERS[f"PERF_{e}_BUSY"])
    hang = R.DEBUG_HANG.decode((yield from read(R.DEBUG_HANG)))
    events = []
    for e in range(EVENTS):
        events.append((yield from read(_reg("EVENT", e))))
    states, rings, entries = [], {}, {}
    for q in range(QUEUES):
        if not R.Q_CTRL0.ENABLE.get((yield from read(_reg("Q_CTRL", q)))):
            continue
        s, n, ring = yield from _queue(q, last, ahead)
        states.append(s)
        rings[q], entries[q] = (ring, n), n
    for s in states:
        if s.status.get("WAITING"):
            yield from _blocking_wait(s, states, rings, events)
    return HangReport((yield from read(R.TIMESTAMP)), fw, core_pc, fault, engines, busy, hang,
                      (yield from read(R.IRQ_STATUS)), (yield from read(R.IRQ_ENABLE)), events,
                      states, entries)


