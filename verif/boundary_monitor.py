"""The device boundary as transactions: a transparent probe around any device decodes what the
host does and sees into transactions and hands each to its subscribers (``write(txn)``, the
shape of a UVM analysis port), while every call passes through unchanged.

:class:`Probe` wraps a synchronous device (``ChipModel`` under ``driver.ops.run_sync``),
:class:`AsyncProbe` an async backend (``ChipTB``, ``GoldenBackend``) — so the same subscribers
(functional coverage, the command-by-command predictor of ``verif``) serve the
RTL and the golden chip model. Decoded:

* every register access → :class:`RegisterTxn` (what the driver wrote, or read and got back:
  the pin-level CSR monitor's cross-check in verif/bus_agents.py);
* CSR writes: queue configuration → :class:`QueueConfigTxn`; ``DEBUG_HANG`` (fault injection) →
  :class:`DebugHangTxn`; a doorbell → :class:`DoorbellTxn` (occupancy ``P - C`` against
  the ring size) and one :class:`DescriptorTxn` per new descriptor, decoded from the ring bytes the
  host wrote (kept in a sparse shadow of the configured rings); a queue reset →
  :class:`QueueResetTxn`;
* direct submissions (the privileged debug path): ``CMD0..7`` writes then ``CMD_SUBMIT.GO`` →
  :class:`DirectCommandTxn` with the words written last;
* CSR reads: ``IRQ_STATUS`` → :class:`IrqTxn`; a non-zero ``Q_ERROR`` → :class:`QueueErrorTxn`;
  a non-zero ``ERROR_INFO`` (a direct submission's failure) → :class:`DirectErrorTxn`;
  ``Q_CONSUMER`` updates the consumer index;
* host-memory reads of a completion area: the consumer word, and each record not seen before whose
  index the consumer has passed → :class:`RecordTxn`;
* every host-memory write → :class:`HostWriteTxn` (a predictor mirrors host memory with it).
"""
from dataclasses import dataclass

from spec import registers as R
from spec.chip import QUEUES
from spec.completion import RECORD_BYTES, unpack_record

__all__ = ["BoundaryObserver", "Probe", "AsyncProbe", "DoorbellTxn", "DescriptorTxn", "RecordTxn",
           "IrqTxn", "QueueErrorTxn", "QueueResetTxn", "QueueConfigTxn", "DebugHangTxn", "HostWriteTxn",
           "RegisterTxn", "DirectCommandTxn", "DirectErrorTxn", "QUEUES"]

M32 = 0xFFFF_FFFF
DESC_BYTES = 32
PAGE = 4096


@dataclass(frozen=True)
class RegisterTxn:
    kind: str                #: "write" (published before it goes out) or "read" (after it returned)
    reg: object              #: the spec.registers Register
    value: int


@dataclass(frozen=True)
class DoorbellTxn:
    queue: int
    producer: int
    used: int                #: P - C after the doorbell (mod 2**32)
    entries: int
    backwards: bool          #: P moved backwards (no new descriptors)


@dataclass(frozen=True)
class DescriptorTxn:
    queue: int
    index: int
    words: tuple
    entries: int


@dataclass(frozen=True)
class RecordTxn:
    queue: int
    record: dict


@dataclass(frozen=True)
class IrqTxn:
    status: int


@dataclass(frozen=True)
class QueueErrorTxn:
    queue: int
    code: int


@dataclass(frozen=True)
class QueueResetTxn:
    queue: int


@dataclass(frozen=True)
class QueueConfigTxn:
    queue: int
    name: str                #: "Q_RING_BASE", "Q_RING_SIZE", "Q_CPL_BASE", "Q_WINDOW_BASE", ...
    value: int


@dataclass(frozen=True)
class DebugHangTxn:
    value: int               #: DEBUG_HANG as written (fault injection: an engine freezes)


@dataclass(frozen=True)
class DirectCommandTxn:
    words: tuple             #: CMD0..7 as last written, when CMD_SUBMIT.GO was written


@dataclass(frozen=True)
class DirectErrorTxn:
    code: int                #: ERROR_INFO as read: the first failed direct submission
    opcode: int
    tag: int


@dataclass(frozen=True)
class HostWriteTxn:
    addr: int
    data: bytes


class _Queue:
    def __init__(self, ring=0, cpl=0, log2=0, sized=False, stale=frozenset()):
        self.ring, self.cpl, self.log2, self.sized = ring, cpl, log2, sized
        self.producer = self.consumer = 0
        self.seen = {}           # record index -> timestamp, of the records published
        self.expect = {}         # descriptor index -> (opcode, tag), from the doorbells
        self.stale = stale       # (index, timestamp) of records from before the last reset

    @property
    def entries(self):
        return 1 << self.log2


_CONFIG = ("Q_RING_BASE", "Q_RING_SIZE", "Q_CPL_BASE", "Q_WINDOW_BASE", "Q_WINDOW_SIZE")


def _split(name):
    kind = name.rstrip("0123456789")
    return kind, name[len(kind):]


class BoundaryObserver:
    """Decodes the traffic of one device into transactions (see the module doc)."""

    def __init__(self, *subscribers):
        self.subscribers = list(subscribers)
        self.q = [_Queue() for _ in range(QUEUES)]
        self.pages = {}
        self.cmd = [0] * len(R.CMD)          # the direct-submission words (CMD0..7) last written

    def publish(self, txn):
        for s in self.subscribers:
            s.write(txn)

    # ---------------------------------------------------------------- traffic
    def on_write(self, reg, value):
        self.publish(RegisterTxn("write", reg, value))
        kind, q = _split(reg.name)
        if reg.name == "DEBUG_HANG":
            self.publish(DebugHangTxn(value))
        if kind == "CMD" and q and int(q) < len(self.cmd):
            self.cmd[int(q)] = value & M32
        elif reg.name == "CMD_SUBMIT" and R.CMD_SUBMIT.GO.get(value):
            self.publish(DirectCommandTxn(tuple(self.cmd)))
        if not q or not kind.startswith("Q_"):
            return
        s = self.q[int(q)]
        if kind in _CONFIG:
            self.publish(QueueConfigTxn(int(q), kind, value))
        if kind == "Q_RING_BASE":
            s.ring = value
        elif kind == "Q_RING_SIZE":
            s.log2, s.sized = value, True
        elif kind == "Q_CPL_BASE":
            s.cpl = value
        elif kind == "Q_DOORBELL":
            self._doorbell(int(q), s, value)
        elif kind == "Q_CTRL" and R.Q_CTRL0.RESET.get(value):
            # The chip does not clear the completion area: its old records must not pass as new.
            stale = s.stale | set(s.seen.items())
            self.q[int(q)] = _Queue(s.ring, s.cpl, s.log2, s.sized, frozenset(stale))
            self.publish(QueueResetTxn(int(q)))

    def on_read(self, reg, value):
        self.publish(RegisterTxn("read", reg, value))
        kind, q = _split(reg.name)
        if reg.name == "IRQ_STATUS" and value:
            self.publish(IrqTxn(value))
        elif reg.name == "ERROR_INFO" and R.ERROR_INFO.CODE.get(value):
            self.publish(DirectErrorTxn(R.ERROR_INFO.CODE.get(value), R.ERROR_INFO.OPCODE.get(value),
                                        R.ERROR_INFO.TAG.get(value)))
        elif kind == "Q_ERROR" and value:
            self.publish(QueueErrorTxn(int(q), value))
        elif kind == "Q_CONSUMER":
            self.q[int(q)].consumer = value

    def on_host_write(self, addr, data):
        data = bytes(data)
        for s in self.q:             # shadow only the rings: descriptors are decoded from them
            lo, hi = max(addr, s.ring), min(addr + len(data), s.ring + DESC_BYTES * s.entries)
            if s.sized and lo < hi:
                self._copy(lo, data[lo - addr:hi - addr])
        self.publish(HostWriteTxn(addr, data))

    def on_host_read(self, addr, data):
        for i, s in enumerate(self.q):
            if s.cpl and addr < s.cpl + RECORD_BYTES * (1 + s.entries) and addr + len(data) > s.cpl:
                self._records(i, s, addr, bytes(data))

    # ---------------------------------------------------------------- details
    def _copy(self, addr, data):
        pos = 0
        while pos < len(data):
            page, off = divmod(addr + pos, PAGE)
            n = min(PAGE - off, len(data) - pos)
            self.pages.setdefault(page, bytearray(PAGE))[off:off + n] = data[pos:pos + n]
            pos += n

    def _shadow(self, addr, n):
        out = bytearray()
        while len(out) < n:
            page, off = divmod(addr + len(out), PAGE)
            k = min(PAGE - off, n - len(out))
            out += self.pages.get(page, bytes(PAGE))[off:off + k]
        return bytes(out)

    def _doorbell(self, q, s, producer):
        ahead = (producer - s.producer) & M32
        used = (producer - s.consumer) & M32
        backwards = ahead > 1 << 31
        self.publish(DoorbellTxn(q, producer, used, s.entries, backwards))
        if backwards:
            return
        if used <= s.entries:            # beyond: RING_OVERFLOW, the chip fetches none of them
            for k in range(ahead):
                i = (s.producer + k) & M32
                raw = self._shadow(s.ring + DESC_BYTES * (i % s.entries), DESC_BYTES)
                words = tuple(int.from_bytes(raw[4 * w:4 * w + 4], "little") for w in range(8))
                s.expect[i] = (words[0] & 0xFF, words[0] >> 16)
                self.publish(DescriptorTxn(q, i, words, s.entries))
        s.producer = producer

    def _records(self, q, s, addr, data):
        def part(off, n):
            lo = s.cpl + off - addr
            return data[lo:lo + n] if 0 <= lo and lo + n <= len(data) else None
        raw = part(0, 4)
        if raw is not None:
            s.consumer = int.from_bytes(raw, "little")
        for slot in range(s.entries):
            raw = part(RECORD_BYTES * (1 + slot), RECORD_BYTES)
            if raw is None:
                continue
            rec = unpack_record(raw)
            i = rec["index"]
            # A slot holds a new record once the consumer index has passed it, for a descriptor
            # doorbelled since the last reset, and not left over from before that reset.
            fresh = (0 < ((s.consumer - i) & M32) <= s.entries and i % s.entries == slot
                     and s.expect.get(i) == (rec["opcode"], rec["tag"])
                     and (i, rec["timestamp"]) not in s.stale)
            if fresh and rec["queue"] == q and i not in s.seen:
                s.seen[i] = rec["timestamp"]
                self.publish(RecordTxn(q, rec))


class Probe:
    """A synchronous device seen through a BoundaryObserver."""

    def __init__(self, dev, observer):
        self.dev, self.observer = dev, observer

    def read(self, reg):
        v = self.dev.read(reg)
        self.observer.on_read(reg, v)
        return v

    def write(self, reg, value):
        self.observer.on_write(reg, value)
        return self.dev.write(reg, value)

    def host_read(self, addr, n):
        data = self.dev.host_read(addr, n)
        self.observer.on_host_read(addr, data)
        return data

    def host_write(self, addr, data):
        self.observer.on_host_write(addr, data)
        return self.dev.host_write(addr, data)

    def __getattr__(self, name):             # wait, run, irq, ... pass straight through
        return getattr(self.dev, name)


class AsyncProbe:
    """An async backend seen through a BoundaryObserver."""

    def __init__(self, dev, observer):
        self.dev, self.observer = dev, observer

    async def read(self, reg):
        v = await self.dev.read(reg)
        self.observer.on_read(reg, v)
        return v

    async def write(self, reg, value):
        self.observer.on_write(reg, value)
        return await self.dev.write(reg, value)

    async def host_read(self, addr, n):
        data = await self.dev.host_read(addr, n)
        self.observer.on_host_read(addr, data)
        return data

    async def host_write(self, addr, data):
        self.observer.on_host_write(addr, data)
        return await self.dev.host_write(addr, data)

    def __getattr__(self, name):
        return getattr(self.dev, name)
