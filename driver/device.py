"""Host driver API: Device, Buffer, Queue, Submission, Event and Program execution (docs/driver.md).

The API is asynchronous (``async def``) and runs on any *backend*: an object with the coroutine
methods

* ``await read(reg) -> int`` / ``await write(reg, value)`` — a host CSR (``spec.registers``);
* ``await host_read(addr, n) -> bytes`` / ``await host_write(addr, data)`` — host memory;
* ``await wait(cycles)`` — let the chip run ``cycles`` clock cycles;
* ``await wait_interrupt(max_cycles) -> bool`` — return True as soon as the chip's interrupt line
  is high (at once if it already is), False after ``max_cycles`` cycles without it.

``verif/chip_tb.py:ChipTB`` is the RTL backend (cocotb + Verilator);
:class:`golden.backend.GoldenBackend` wraps the golden chip model. This module imports
neither cocotb nor the golden model. :class:`driver.sync.SyncDevice` is a synchronous facade for
the golden backend.

Interrupts: the driver enables QUEUE_CPL and QUEUE_ERROR of every queue. Whoever waits (a
submission, back-pressure, ``Device.wait_any``) checks its condition in host memory (the consumer
index and the completion records), and if it does not hold yet sleeps on the interrupt line;
when the line is high it reads IRQ_STATUS, acknowledges exactly the bits it read (W1C) and posts
them to their queues, so an interrupt for queue 1 wakes a waiter of queue 0 only for one check.
"""
import contextlib
import itertools
import struct
from dataclasses import dataclass

import numpy as np

from spec import registers as R
from .bringup import FirmwareError, load_firmware as _load_firmware_program
from spec.capabilities import Capabilities, DeviceIdError
from spec.commands import encode
from spec.completion import RECORD_BYTES, unpack_record
from spec.descriptors import DESCRIPTOR_FIELDS, ErrorCode, Opcode
from .errors import DeviceError, DeviceTimeout, DriverMisuse, OutOfMemory, QueueError
from .forensics import hang_report
from .ops import run_async
from .command_list import record as record_lists
from .program import ProgramError, reached

__all__ = ["Device", "Buffer", "Queue", "Submission", "Event", "HostAllocator", "CommandList",
           "DeviceError", "DeviceTimeout", "QueueError", "DriverMisuse"]

M32 = 0xFFFF_FFFF
DESC_BYTES = 32
IRQ_BIT = 1 << DESCRIPTOR_FIELDS["flags.irq"][0]
#: cycles a waiter sleeps on the interrupt line before it re-checks host memory anyway (a
#: descriptor without flags.irq completes silently)
POLL_CYCLES = 2_000


def _reg(name, i):
    return R.REGISTERS[f"{name}{i}"]


# ==================================================================================== memory
class HostAllocator:
    """First-fit allocator over ``[base, base + size)`` of host memory (byte addresses)."""

    def __init__(self, base, size):
        if base < 0 or size <= 0:
            raise DriverMisuse(f"host memory region base {base:#x} size {size} is empty or negative")
        self.base, self.size = base, size
        self._free = [(base, size)]          # sorted (addr, size), coalesced
        self._used = {}                      # addr -> size

    def alloc(self, nbytes, align=64):
        if not isinstance(nbytes, int) or nbytes <= 0:
            raise DriverMisuse(f"allocation size must be a positive int, not {nbytes!r}")
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise DriverMisuse(f"alignment must be a power of two, not {align!r}")
        for i, (a, n) in enumerate(self._free):
            start = -(-a // align) * align
            if start + nbytes <= a + n:
                pieces = [(a, start - a), (start + nbytes, a + n - start - nbytes)]
                self._free[i:i + 1] = [p for p in pieces if p[1] > 0]
                self._used[start] = nbytes
                return start
        raise OutOfMemory(f"out of host memory: no {nbytes} bytes aligned to {align} free in "
                           f"[{self.base:#x}, {self.base + self.size:#x}) ({self.free_bytes} bytes free "
                           f"in {len(self._free)} pieces)")

    def free(self, addr):
        n = self._used.pop(addr, None)
        if n is None:
            raise DriverMisuse(f"free of host address {addr:#x}: not allocated (double free?)")
        self._free.append((addr, n))
        self._free.sort()
        merged = []
        for a, s in self._free:
            if merged and merged[-1][0] + merged[-1][1] == a:
                merged[-1] = (merged[-1][0], merged[-1][1] + s)
            else:
                merged.append((a, s))
        self._free = merged

    @property
    def free_bytes(self):
        return sum(n for _, n in self._free)

    @property
    def allocations(self):
        return dict(self._used)


def _raw_bytes(data, what):
    """The bytes of a NumPy array (C order) or a bytes-like object; DriverMisuse for anything else
    (``bytes(5)`` would silently be five zero bytes)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).tobytes()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise DriverMisuse(f"{what}: data must be a NumPy array or bytes, not {type(data).__name__} "
                       f"{data!r:.60}")


class Buffer:
    """Host memory the device can reach: ``addr`` (device = host address), ``nbytes``."""

    def __init__(self, device, addr, nbytes, align):
        self.device, self.addr, self.nbytes, self.align = device, addr, nbytes, align
        self.freed = False

    def __repr__(self):
        return f"Buffer(addr={self.addr:#x}, nbytes={self.nbytes})"

    def _check(self, offset, n, what):
        if self.freed:
            raise DriverMisuse(f"{what} of freed buffer at {self.addr:#x}")
        if offset < 0 or n < 0 or offset + n > self.nbytes:
            raise DriverMisuse(f"{what} of {n} bytes at offset {offset} is outside the buffer of "
                               f"{self.nbytes} bytes at {self.addr:#x}")

    async def write(self, data, offset=0):
        """Write a NumPy array (its raw bytes, C order) or bytes at ``offset``."""
        raw = _raw_bytes(data, "Buffer.write")
        if not isinstance(offset, int):
            raise DriverMisuse(f"Buffer.write offset must be an int, not {offset!r}")
        self._check(offset, len(raw), "write")
        await self.device.backend.host_write(self.addr + offset, raw)

    async def read(self, dtype=np.uint8, shape=None, offset=0):
        """Read an array of ``dtype`` and ``shape`` (default: the rest of the buffer) at ``offset``."""
        dtype = np.dtype(dtype)
        if shape is None:
            shape = ((self.nbytes - offset) // dtype.itemsize,)
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        self._check(offset, n, "read")
        raw = await self.device.backend.host_read(self.addr + offset, n)
        return np.frombuffer(bytes(raw), dtype=dtype).reshape(shape).copy()

    def free(self):
        if self.freed:
            raise DriverMisuse(f"double free of buffer at {self.addr:#x} ({self.nbytes} bytes)")
        self.device.allocator.free(self.addr)
        self.freed = True


# ==================================================================================== queues
@dataclass
class Submission:
    """Descriptors ``[first, first + count)`` (free-running indices) of ``queue``."""
    queue: "Queue"
    first: int
    count: int
    generation: int
    records: list = None          #: the completion records once :meth:`wait` returned

    @property
    def end(self):
        return (self.first + self.count) & M32

    async def wait(self, timeout_cycles=1_000_000):
        """Wait until every descriptor retired; return their completion records (dicts, in order).
        Raises QueueError if one failed or the queue halted first, DeviceTimeout after the budget."""
        if self.records is None:
            self.records = await self.queue._wait_submission(self, timeout_cycles)
        return self.records


class Queue:
    """One hardware command queue with its ring, completion area and DMA window (see module doc)."""

    def __init__(self, device, index, entries):
        self.device, self.index, self.entries = device, index, entries
        self.log2 = entries.bit_length() - 1
        self.ring = device.allocator.alloc(DESC_BYTES * entries, 64)
        self.cpl = device.allocator.alloc(RECORD_BYTES * (1 + entries), 64)
        self.producer = 0            # P: descriptors written and doorbelled
        self.seen = 0                # consumer index up to which records were harvested
        self.records = {}            # index -> record dict, until a submission collects it
        self.generation = 0          # bumped by reset: older submissions are void
        self.error = None            # QueueError once the queue halted
        self.closed = False

    def __repr__(self):
        return f"Queue({self.index}, entries={self.entries}, P={self.producer}, C={self.seen})"

    async def _configure(self):
        dev, q = self.device, self.index
        await self._hw_reset()
        await dev.backend.host_write(self.cpl, bytes(RECORD_BYTES * (1 + self.entries)))
        for name, value in (("Q_RING_BASE", self.ring), ("Q_RING_SIZE", self.log2),
                            ("Q_CPL_BASE", self.cpl), ("Q_WINDOW_BASE", dev.allocator.base),
                            ("Q_WINDOW_SIZE", dev.allocator.size)):
            await dev.backend.write(_reg(name, q), value)
        await dev.backend.write(_reg("Q_CTRL", q), R.Q_CTRL0.ENABLE.put(1))

    # ------------------------------------------------------------------ state
    async def consumer(self):
        """The consumer index C as the device last wrote it to host memory."""
        raw = await self.device.backend.host_read(self.cpl, 4)
        return int.from_bytes(raw, "little")

    async def _poll(self):
        """Harvest new completion records; notice a halt. Returns the consumer index."""
        dev = self.device
        c = await self.consumer()
        new = (c - self.seen) & M32
        if new and new <= self.entries:
            area = await dev.backend.host_read(self.cpl + RECORD_BYTES, RECORD_BYTES * self.entries)
            for k in range(new):
                i = (self.seen + k) & M32
                slot = i % self.entries
                rec = unpack_record(area[RECORD_BYTES * slot:RECORD_BYTES * (slot + 1)])
                self.records[i] = rec
            self.seen = c
        elif new:
            raise DeviceError(f"queue {self.index}: consumer index jumped from {self.seen} to {c} "
                              f"(more than the {self.entries} ring entries)")
        if self.error is None and dev._posted_error(self.index):
            await self._read_error()
        return c

    async def _read_error(self):
        b = self.device.backend
        status = R.Q_STATUS0.decode(await b.read(_reg("Q_STATUS", self.index)))
        if not status["HALTED"]:
            return
        code = await b.read(_reg("Q_ERROR", self.index))
        index = await b.read(_reg("Q_ERROR_INDEX", self.index))
        record = self.records.get(index)
        self.error = QueueError(self.index, code, index, record)

    async def status(self):
        """Q_STATUS of the queue as a field dict."""
        return R.Q_STATUS0.decode(await self.device.backend.read(_reg("Q_STATUS", self.index)))

    # ------------------------------------------------------------------ submission
    async def submit(self, descriptors, irq_last=True, timeout_cycles=1_000_000):
        """Write ``descriptors`` (lists of 8 words) to the ring and ring the doorbell; returns a
        :class:`Submission`. When the ring is full, rings the doorbell for what was written
        (flagging that descriptor's irq) and waits for the consumer index to free slots."""
        descs = self._check_descriptors(descriptors)
        first = self.producer
        done = 0
        waited_from = None
        while done < len(descs):
            n = await self._push(descs[done:], irq_last)
            done += n
            if done < len(descs) and n == 0:
                if waited_from is None:
                    waited_from = await self.device._now()
                await self.device._sleep(waited_from, timeout_cycles,
                                         f"room in the ring of queue {self.index}", [self])
            elif n:
                waited_from = None
        return Submission(self, first, len(descs), self.generation)

    def _check_descriptors(self, descriptors):
        if self.closed:
            raise DriverMisuse(f"submit to closed queue {self.index}")
        if self.error is not None:
            raise self.error
        if isinstance(descriptors, (str, bytes, dict)) or not hasattr(descriptors, "__iter__"):
            raise DriverMisuse(f"submit(descriptors={descriptors!r}): expected a list of descriptors "
                               f"(each 8 words of 32 bits), got {type(descriptors).__name__}")
        descs = []
        for k, d in enumerate(descriptors):
            if type(d) is list and len(d) == 8 and all(type(w) is int and 0 <= w <= M32 for w in d):
                descs.append(list(d))          # the common case, as the checks below take it
                continue
            try:
                words = list(d)
                if not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool)
                           for w in words):
                    raise TypeError
                d = [int(w) for w in words]
            except TypeError:
                raise DriverMisuse(f"submit: descriptor {k} ({d!r}, a {type(d).__name__}) must be a "
                                   f"list of 8 int words of 32 bits") from None
            if len(d) != 8 or any(not 0 <= w <= M32 for w in d):
                raise DriverMisuse(f"descriptor {k} must be 8 words of 32 bits, not {d!r}")
            descs.append(d)
        if not descs:
            raise DriverMisuse("submit of an empty descriptor list")
        return descs

    async def _push(self, descs, irq_last):
        """Write as many of ``descs`` as the ring has room for (no waiting); ring the doorbell."""
        c = await self._poll()
        if self.error is not None:
            raise self.error
        room = self.entries - ((self.producer - c) & M32)
        n = min(room, len(descs))
        if n <= 0:
            return 0
        batch = [list(d) for d in descs[:n]]
        if n < len(descs) or irq_last:
            batch[-1][0] |= IRQ_BIT          # wake the waiter when this batch (or all) is done
        b = self.device.backend
        k = 0
        while k < n:                         # contiguous runs of ring slots
            slot = (self.producer + k) % self.entries
            run = min(n - k, self.entries - slot)
            data = struct.pack(f"<{8 * run}I", *itertools.chain.from_iterable(batch[k:k + run]))
            await b.host_write(self.ring + DESC_BYTES * slot, data)
            k += run
        self.producer = (self.producer + n) & M32
        await b.write(_reg("Q_DOORBELL", self.index), self.producer)
        return n

    async def _wait_submission(self, sub, timeout_cycles):
        if sub.generation != self.generation:
            raise DriverMisuse(f"submission {sub.first}+{sub.count} of queue {self.index} was "
                               f"discarded by a queue reset")
        start = await self.device._now()
        while True:
            c = await self._poll()
            if sub.count <= ((c - sub.first) & M32) < 0x8000_0000:      # C passed the last one
                recs = [self.records.get((sub.first + k) & M32) for k in range(sub.count)]
                if None in recs:
                    raise DriverMisuse(f"records of descriptor {(sub.first + recs.index(None)) & M32} of "
                                       f"queue {self.index} were discarded (wait_idle drops records no "
                                       f"submission collected yet)")
                for k, r in enumerate(recs):
                    if r["status"] != ErrorCode.OK:
                        if self.error is None:
                            await self._read_error()
                        raise self.error or QueueError(self.index, r["status"], (sub.first + k) & M32, r)
                for k in range(sub.count):
                    self.records.pop((sub.first + k) & M32, None)
                return recs
            if self.error is not None:
                raise self.error
            await self.device._sleep(start, timeout_cycles,
                                     f"descriptors {sub.first}..{sub.end - 1} of queue {self.index}",
                                     [self])

    async def wait_idle(self, timeout_cycles=1_000_000):
        """Wait until every submitted descriptor retired (C == P); raises QueueError on a halt.
        Drops the records no submission collected yet (wait on a Submission to get them)."""
        start = await self.device._now()
        while True:
            c = await self._poll()
            if self.error is not None:
                raise self.error
            if c == self.producer:
                self.records.clear()
                return
            await self.device._sleep(start, timeout_cycles,
                                     f"queue {self.index} to drain (C={c}, P={self.producer})", [self])

    async def reset(self, timeout_cycles=200_000, poll=100):
        """Q_CTRL.RESET, wait for RESETTING = 0 and re-enable: recovers a halted queue; indices
        restart at 0 and outstanding submissions become void."""
        await self._hw_reset(timeout_cycles, poll)
        self.records.clear()
        self.error = None
        self.generation += 1
        await self.device.backend.write(_reg("Q_CTRL", self.index), R.Q_CTRL0.ENABLE.put(1))

    async def _hw_reset(self, timeout_cycles=200_000, poll=100):
        dev, b = self.device, self.device.backend
        await b.write(_reg("Q_CTRL", self.index), R.Q_CTRL0.RESET.put(1))
        waited = 0
        while (await self.status())["RESETTING"]:
            if waited >= timeout_cycles:
                raise DeviceTimeout(f"queue {self.index} to finish its reset (Q_STATUS.RESETTING)",
                                    waited, await dev.describe())
            await b.wait(poll)
            waited += poll
        await b.host_write(self.cpl, bytes(4))
        mask = R.IRQ_STATUS.QUEUE_CPL.put(1 << self.index) | R.IRQ_STATUS.QUEUE_ERROR.put(1 << self.index)
        await b.write(R.IRQ_STATUS, mask)
        dev._pending[self.index] = 0
        self.producer = self.seen = 0

    async def close(self):
        """Reset and disable the queue (commands already forwarded finish first), free its ring
        and completion area; outstanding submissions become void."""
        if self.closed:
            return
        await self._hw_reset()
        self.generation += 1
        self.device.allocator.free(self.ring)
        self.device.allocator.free(self.cpl)
        self.closed = True
        self.device._queues.pop(self.index, None)


# ==================================================================================== events
class Event:
    """A device event counter used as a timeline: ``signal_on``/``wait_on`` append SIGNAL_EVENT /
    WAIT_EVENT descriptors; the host waits with :meth:`wait` (polls EVENT[e] every ``poll``
    cycles). Values compare wrap-safely (``(int32)(EVENT - value) >= 0``)."""

    def __init__(self, device, index, base):
        self.device, self.index = device, index
        self.last = base             #: the latest value the driver scheduled (starts at the counter)
        self.freed = False

    def __repr__(self):
        return f"Event({self.index}, last={self.last})"

    def next_value(self, step=1):
        """A value later than any scheduled so far (the driver's timeline)."""
        self.last = (self.last + step) & M32
        return self.last

    async def value(self):
        return await self.device.backend.read(_reg("EVENT", self.index))

    def _check(self, value):
        if self.freed:
            raise DriverMisuse(f"use of freed event {self.index}")
        if not isinstance(value, int) or not 0 <= value <= M32:
            raise DriverMisuse(f"event value must be a 32-bit unsigned int, not {value!r}")

    async def signal_on(self, queue, value, irq=False):
        """Append SIGNAL_EVENT(value) to ``queue`` (runs after everything before it on the queue)."""
        self._check(value)
        if reached(value, self.last):
            self.last = value
        return await queue.submit([encode(Opcode.SIGNAL_EVENT, event=self.index, value=value)],
                                  irq_last=irq)

    async def wait_on(self, queue, value, irq=False):
        """Append WAIT_EVENT(value) to ``queue``: its later descriptors wait for the event."""
        self._check(value)
        return await queue.submit([encode(Opcode.WAIT_EVENT, event=self.index, value=value)],
                                  irq_last=irq)

    async def wait(self, value, timeout_cycles=100_000, poll=200):
        """Wait on the host until the counter reached ``value``; DeviceTimeout after the budget."""
        self._check(value)
        waited = 0
        while True:
            now = await self.value()
            if reached(now, value):
                return now
            if waited >= timeout_cycles:
                raise DeviceTimeout(f"event {self.index} to reach {value} (it is {now})", waited,
                                    await self.device.describe())
            step = min(poll, timeout_cycles - waited)
            await self.device.backend.wait(step)
            waited += step

    def free(self):
        if self.freed:
            raise DriverMisuse(f"double free of event {self.index}")
        self.freed = True
        self.device._free_events.add(self.index)


# ==================================================================================== device
class Device:
    """A Kaki chip behind ``backend``; create it with ``await Device.open(...)``."""

    def __init__(self, backend, caps, queues, events, host_base, host_bytes):
        self.backend, self.caps = backend, caps
        self.num_queues, self.num_events = queues, events
        self.allocator = HostAllocator(host_base, host_bytes)
        self._queues = {}
        self._free_events = set(range(events))
        self._pending = [0] * queues          # posted IRQ_STATUS bits per queue (bit0 CPL, bit1 ERROR)
        self._servicing = False
        self.firmware_version = None
        self.interrupts = 0                   #: interrupts serviced that carried queue bits

    @classmethod
    async def open(cls, backend, *, host_base, host_bytes, firmware=None):
        """Read ID, VERSION and CAP_*; optionally load ``firmware`` (ELF path or FirmwareImage).
        Raises DeviceError when ID is not the Kaki magic."""
        magic = await backend.read(R.ID)
        if magic != R.ID.MAGIC.reset:
            raise DeviceError(f"ID register reads {magic:#010x}, not the Kaki magic "
                              f"{R.ID.MAGIC.reset:#010x}: wrong device or broken register path")
        values = {}
        for reg in (R.ID, R.VERSION, R.CAP_ARRAY, R.CAP_SPAD, R.CAP_ACC, R.CAP_DMA, R.CAP_QUEUES):
            values[reg.name] = await backend.read(reg)
        try:
            caps = Capabilities.from_values(lambda reg: values[reg.name])
        except DeviceIdError as e:
            raise DeviceError(str(e)) from None
        q = values["CAP_QUEUES"]
        queues, events = R.CAP_QUEUES.QUEUES.get(q), R.CAP_QUEUES.EVENTS.get(q)
        caps = Capabilities(**{**caps.__dict__, "queues": queues})
        dev = cls(backend, caps, queues, events, host_base, host_bytes)
        allq = (1 << queues) - 1
        await backend.write(R.IRQ_STATUS, R.IRQ_STATUS.QUEUE_CPL.put(allq) | R.IRQ_STATUS.QUEUE_ERROR.put(allq))
        await dev._enable_irqs()
        if firmware is not None:
            await dev.load_firmware(firmware)
        return dev

    async def load_firmware(self, image, budget=500_000):
        """Load the control core's firmware (driver.bringup) and enable the queue interrupts;
        returns FW_VERSION. Raises DeviceError (from the FirmwareError) on a fault or timeout."""
        try:
            self.firmware_version = await run_async(_load_firmware_program(image, budget=budget, poll=200),
                                                    self.backend)
        except FirmwareError as e:
            raise DeviceError(str(e)) from e
        await self._enable_irqs()
        return self.firmware_version

    async def _enable_irqs(self):
        allq = (1 << self.num_queues) - 1
        await self.backend.write(R.IRQ_ENABLE, R.IRQ_ENABLE.QUEUE_CPL.put(allq)
                                 | R.IRQ_ENABLE.QUEUE_ERROR.put(allq))

    async def reset(self):
        """Reset every queue the driver opened (they stay configured and enabled), clear the
        queue interrupts."""
        for q in list(self._queues.values()):
            await q.reset()
        allq = (1 << self.num_queues) - 1
        await self.backend.write(R.IRQ_STATUS, R.IRQ_STATUS.QUEUE_CPL.put(allq)
                                 | R.IRQ_STATUS.QUEUE_ERROR.put(allq))
        self._pending = [0] * self.num_queues
        await self._enable_irqs()

    async def close(self):
        """Disable and free every queue."""
        for q in list(self._queues.values()):
            await q.close()

    async def set_bus_timeout(self, cycles):
        """Set BUS_TIMEOUT.CYCLES, the longest a transfer on the host memory port may wait for a
        handshake or a response before its DMA command fails with BUS_TIMEOUT (a descriptor fetch
        or completion write: its queue halts with it); 0 turns the timeout off. Returns the value
        it replaces."""
        if not isinstance(cycles, int) or isinstance(cycles, bool) or not 0 <= cycles <= M32:
            raise DriverMisuse(f"bus timeout {cycles!r} must be an int of 0..{M32} cycles")
        old = await self.backend.read(R.BUS_TIMEOUT)
        await self.backend.write(R.BUS_TIMEOUT, cycles)
        return old

    # ------------------------------------------------------------------ resources
    def alloc(self, nbytes, align=64):
        """A :class:`Buffer` of ``nbytes`` host bytes aligned to ``align``."""
        return Buffer(self, self.allocator.alloc(nbytes, align), nbytes, align)

    async def upload(self, array, align=64):
        """A new buffer holding ``array``'s bytes."""
        raw = _raw_bytes(array, "Device.upload")
        buf = self.alloc(len(raw), align)
        await buf.write(raw)
        return buf

    async def queue(self, index=None, entries=32):
        """Hardware queue ``index`` (the first free one when None), configured with a ring of
        ``entries`` descriptors (a power of two, 2..32768) and enabled; reopening returns it."""
        if not isinstance(entries, int) or entries < 2 or entries > 1 << 15 or entries & (entries - 1):
            raise DriverMisuse(f"ring entries must be a power of two in 2..32768, not {entries!r}")
        if index is None:
            free = [i for i in range(self.num_queues) if i not in self._queues]
            if not free:
                raise DriverMisuse(f"all {self.num_queues} queues are open")
            index = free[0]
        if not isinstance(index, int) or not 0 <= index < self.num_queues:
            raise DriverMisuse(f"queue index {index!r} outside 0..{self.num_queues - 1}")
        if index in self._queues:
            q = self._queues[index]
            if q.entries != entries:
                raise DriverMisuse(f"queue {index} is open with {q.entries} entries, not {entries}")
            return q
        q = Queue(self, index, entries)
        self._queues[index] = q
        await q._configure()
        return q

    create_queue = queue

    async def event(self):
        """Allocate an event counter; its timeline starts at the counter's current value."""
        if not self._free_events:
            raise DriverMisuse(f"all {self.num_events} device event counters are allocated")
        e = min(self._free_events)
        self._free_events.remove(e)
        return Event(self, e, await self.backend.read(_reg("EVENT", e)))

    create_event = event

    # ------------------------------------------------------------------ waiting
    async def _now(self):
        return await self.backend.read(R.TIMESTAMP)

    def _posted_error(self, q):
        return bool(self._pending[q] & 2)

    async def _service_irq(self):
        """Read IRQ_STATUS, acknowledge the queue bits read, post them to their queues; returns
        whether there were any."""
        if self._servicing:
            return False
        self._servicing = True
        try:
            status = await self.backend.read(R.IRQ_STATUS)
            cpl, err = R.IRQ_STATUS.QUEUE_CPL.get(status), R.IRQ_STATUS.QUEUE_ERROR.get(status)
            if cpl or err:
                self.interrupts += 1
                await self.backend.write(R.IRQ_STATUS, R.IRQ_STATUS.QUEUE_CPL.put(cpl)
                                         | R.IRQ_STATUS.QUEUE_ERROR.put(err))
            for q in range(self.num_queues):
                self._pending[q] |= ((cpl >> q) & 1) | (((err >> q) & 1) << 1)
            return bool(cpl or err)
        finally:
            self._servicing = False

    async def _sleep(self, start, timeout_cycles, what, queues=()):
        """One wait step of a waiter that started at TIMESTAMP ``start``: sleep on the interrupt
        line (at most POLL_CYCLES), then service it. DeviceTimeout once the budget is spent."""
        waited = (await self._now() - start) & M32
        if waited >= timeout_cycles:
            raise DeviceTimeout(what, waited, await self.describe())
        for q in queues:
            self._pending[q.index] &= ~1
        if await self.backend.wait_interrupt(min(POLL_CYCLES, timeout_cycles - waited)):
            if not await self._service_irq():
                # the line is high for a cause that is not ours (or another waiter is acknowledging
                # it): let time pass rather than spin
                await self.backend.wait(min(64, max(1, timeout_cycles - waited)))

    async def wait_any(self, submissions, timeout_cycles=1_000_000):
        """Wait for all ``submissions`` (possibly on several queues); return their records."""
        return [await s.wait(timeout_cycles) for s in submissions]

    async def describe(self):
        """The hang report (driver/forensics.py): firmware, engines, events, per-queue pointers,
        who waits on which event and the descriptors around each queue's head."""
        return str(await run_async(hang_report(), self.backend))

    # ------------------------------------------------------------------ programs
    async def run(self, program, buffers, *, params=None, queues=None, timeout_cycles=2_000_000):
        """Run a :class:`driver.program.Program` with ``buffers`` (name -> Buffer) and wait for it.

        Buffers not given are allocated for the run when the program may own them (``scratch``,
        ``const`` — filled from ``init``) and freed afterwards; a missing ``input``/``output``/
        ``inout`` buffer or one too small is a DriverMisuse. ``params``: the values of the
        program's scalar parameters (:class:`driver.program.Param`). ``queues``: program queue ->
        Queue (default: the device queue of the same number). The program's events get freshly
        allocated device counters with base = their current value (timelines keep increasing
        over reruns). Every queue's commands are submitted together (interleaved as rings have
        room, so cross-queue event waits cannot deadlock on back-pressure); returns
        ``{program queue: [records]}``. Raises QueueError on a failed descriptor."""
        async with self._bound(program, buffers, queues, "run") as (addresses, events, qmap):
            try:
                bound = program.bind(addresses, events, params=params)
            except ProgramError as e:
                raise DriverMisuse(f"program {program.name!r}: {e}") from None
            subs = await self._submit_interleaved({qmap[pq]: words for pq, words in bound.items()},
                                                  timeout_cycles)
            return {pq: await subs[qmap[pq]].wait(timeout_cycles) for pq in bound}

    @contextlib.asynccontextmanager
    async def _bound(self, program, buffers, queues, what):
        """The bindings of one run or launch of ``program``: yields ``(addresses, events, qmap)``
        (buffer name -> host address, program event -> (device event, base value), program
        queue -> Queue). Buffers the caller does not give are allocated when the program may own
        them, events allocated; both are freed when the block ends. DriverMisuse for a wrong
        ``buffers`` or ``queues`` argument."""
        owned, events = [], []
        if not (hasattr(program, "buffers") and hasattr(program, "commands")):
            raise DriverMisuse(f"{what}(program={program!r:.60}): expected a driver.program.Program, "
                               f"got {type(program).__name__}")
        if not isinstance(buffers, dict) or any(not isinstance(b, Buffer) for b in buffers.values()):
            bad = (type(buffers).__name__ if not isinstance(buffers, dict) else
                   next(f"{k!r}: {type(b).__name__}" for k, b in buffers.items()
                        if not isinstance(b, Buffer)))
            raise DriverMisuse(f"{what}(buffers=...): expected a dict of buffer name -> Buffer "
                               f"(Device.alloc / Device.upload), got {bad}")
        extra = set(buffers) - set(program.buffers)
        if extra:
            raise DriverMisuse(f"program {program.name!r} has no buffer {sorted(extra)[0]!r}")
        try:
            addresses = {}
            for name, spec in program.buffers.items():
                buf = buffers.get(name)
                if buf is None:
                    if spec.role not in ("scratch", "const"):
                        raise DriverMisuse(f"program {program.name!r}: {spec.role} buffer {name!r} "
                                           f"is not given")
                    buf = self.alloc(spec.nbytes, spec.align)
                    owned.append(buf)
                    if spec.init is not None:
                        await buf.write(spec.init)
                elif buf.freed or buf.device is not self:
                    raise DriverMisuse(f"program {program.name!r}: buffer {name!r} is {buf!r}, not a "
                                       f"live Buffer of this device")
                elif buf.nbytes < spec.nbytes:
                    raise DriverMisuse(f"program {program.name!r}: buffer {name!r} has {buf.nbytes} "
                                       f"bytes, the program needs {spec.nbytes}")
                addresses[name] = buf.addr
            for _ in range(program.events):
                events.append(await self.event())
            qmap = {}
            for pq in program.queues:
                q = (queues or {}).get(pq)
                if q is None:
                    q = await self.queue(pq)
                elif not isinstance(q, Queue) or q.closed or q.device is not self:
                    raise DriverMisuse(f"program {program.name!r}: program queue {pq} mapped to "
                                       f"{q!r}, not an open queue of this device")
                qmap[pq] = q
            if len(set(qmap.values())) != len(qmap):
                raise DriverMisuse(f"program {program.name!r}: program queues {sorted(qmap)} must map "
                                   f"to distinct device queues (their events would deadlock otherwise)")
            yield addresses, {i: (e.index, e.last) for i, e in enumerate(events)}, qmap
        finally:
            for e in events:
                e.free()
            for b in owned:
                b.free()

    # ------------------------------------------------------------------ command lists
    async def record(self, program, *, fold=False):
        """Record ``program`` as a :class:`CommandList` (docs/driver.md "Command lists"): per
        program queue its commands as list entries (driver/command_list.py) in device-visible
        host memory, written once, and an argument table; with ``fold`` the repeating runs of a
        queue's commands become looped lists (one pass recorded, docs/queues.md "Looped lists").
        Raises ProgramError for a program beyond the list limits (argument slots, patches per
        command, entries)."""
        if not (hasattr(program, "buffers") and hasattr(program, "commands")):
            raise DriverMisuse(f"record(program={program!r:.60}): expected a driver.program.Program, "
                               f"got {type(program).__name__}")
        if not isinstance(fold, bool):
            raise DriverMisuse(f"record(fold={fold!r}): expected True or False")
        lists = record_lists(program, fold=fold)
        allocated, mem = [], {}
        try:
            for pq, segments in lists.items():
                mem[pq] = []
                for rl in segments:
                    # the table is read in whole 32-byte bursts
                    allocated += [self.allocator.alloc(len(rl.data), 64),
                                  self.allocator.alloc(rl.table_bytes, 64)]
                    mem[pq].append(tuple(allocated[-2:]))
                    await self.backend.host_write(allocated[-2], rl.data)
        except BaseException:
            for a in allocated:
                self.allocator.free(a)
            raise
        return CommandList(self, program, lists, mem)

    async def launch(self, cmd_list, buffers, *, params=None, queues=None, timeout_cycles=2_000_000):
        """Launch a recorded :class:`CommandList` with ``buffers``, ``params`` and ``queues`` as
        :meth:`run` takes them: writes each queue's argument table and submits one EXEC_LIST
        (irq set) per program queue; returns ``{program queue: [record]}`` (the EXEC_LIST's one
        record). A failing item raises QueueError whose message names the item (its position in
        the queue's list, opcode and note); DriverMisuse for a freed list, a list of another
        device, a list being launched, a wrong buffer or parameter."""
        if not isinstance(cmd_list, CommandList):
            raise DriverMisuse(f"launch(cmd_list={cmd_list!r:.60}): expected a CommandList "
                               f"(Device.record), got {type(cmd_list).__name__}")
        program = cmd_list.program
        if cmd_list.device is not self:
            raise DriverMisuse(f"command list of program {program.name!r} was recorded on another "
                               f"device")
        if cmd_list.freed:
            raise DriverMisuse(f"launch of the freed command list of program {program.name!r}")
        if cmd_list.launching:
            raise DriverMisuse(f"command list of program {program.name!r} is being launched: its "
                               f"argument tables are in use until that launch returns")
        try:
            params = program.check_params(params)
        except ProgramError as e:
            raise DriverMisuse(f"program {program.name!r}: {e}") from None
        cmd_list.launching = True
        try:
            async with self._bound(program, buffers, queues, "launch") as (addresses, events, qmap):
                descs = {}
                for pq, segments in cmd_list.lists.items():
                    descs[qmap[pq]] = []
                    for rl, (entries, table) in zip(segments, cmd_list.memory[pq]):
                        try:
                            words = rl.args(addresses, events, params)
                        except ProgramError as e:
                            raise DriverMisuse(str(e)) from None
                        await self.backend.host_write(table, rl.table(words))
                        descs[qmap[pq]].append(rl.descriptor(entries, table,
                                                             tag=cmd_list.launches & 0xFFFF))
                cmd_list.launches += 1
                subs = await self._submit_interleaved(descs, timeout_cycles)
                out = {}
                for pq, segments in cmd_list.lists.items():
                    sub = subs[qmap[pq]]
                    try:
                        out[pq] = await sub.wait(timeout_cycles)
                    except QueueError as e:
                        raise _list_error(e, segments, sub.first, cmd_list.memory[pq]) from None
                return out
        finally:
            cmd_list.launching = False

    async def _submit_interleaved(self, work, timeout_cycles):
        """Submit ``{Queue: [descriptors]}`` round-robin as rings have room; returns Submissions."""
        todo = {q: q._check_descriptors(d) for q, d in work.items()}
        first = {q: q.producer for q in todo}
        done = {q: 0 for q in todo}
        start = None
        while any(done[q] < len(d) for q, d in todo.items()):
            progress = 0
            for q, d in todo.items():
                if done[q] < len(d):
                    n = await q._push(d[done[q]:], True)
                    done[q] += n
                    progress += n
            if progress:
                start = None
            elif any(done[q] < len(d) for q, d in todo.items()):
                start = start if start is not None else await self._now()
                await self._sleep(start, timeout_cycles, "room in the rings of queues "
                                  f"{sorted(q.index for q in todo)}", list(todo))
        return {q: Submission(q, first[q], len(d), q.generation) for q, d in todo.items()}


# ==================================================================================== command lists
class CommandList:
    """A program recorded for :meth:`Device.launch` (:meth:`Device.record`): ``lists`` program
    queue -> its :class:`driver.command_list.RecordedList` segments, ``memory`` program queue ->
    per segment (entries address, argument table address) in the device's host memory."""

    def __init__(self, device, program, lists, memory):
        self.device, self.program, self.lists, self.memory = device, program, lists, memory
        self.freed = False
        self.launching = False
        self.launches = 0            #: launches so far (the EXEC_LIST's tag, mod 2**16)

    def __repr__(self):
        return (f"CommandList({self.program.name!r}, queues {sorted(self.lists)}, entries "
                f"{ {pq: [(rl.entries, rl.passes) if rl.passes > 1 else rl.entries for rl in segs] for pq, segs in self.lists.items()} })")

    def free(self):
        """Free the entries and argument tables (the list must not be running)."""
        if self.freed:
            raise DriverMisuse(f"double free of the command list of program {self.program.name!r}")
        if self.launching:
            raise DriverMisuse(f"free of the command list of program {self.program.name!r} while it "
                               f"is being launched")
        for segments in self.memory.values():
            for entries, table in segments:
                self.device.allocator.free(entries)
                self.device.allocator.free(table)
        self.freed = True


def _list_error(e, segments, first, memory):
    """The QueueError of a launch, naming the list's item that failed (the EXEC_LIST's record
    carries ``item`` = 1 + its run position, docs/queues.md "Command lists") or the list whose
    expansion failed (no record). ``first``: the ring index of the queue's first segment."""
    k = (e.index - first) & 0xFFFF_FFFF
    if k >= len(segments):
        return e
    rl, memory = segments[k], memory[k]
    where = f"command list of program {rl.program!r}, program queue {rl.queue}"
    if len(segments) > 1:
        where += f", segment {k} of {len(segments)}"
    rec = e.record
    if rec is None:
        detail = (f"{where}: expanding the list (entries at {memory[0]:#x}, argument table at "
                  f"{memory[1]:#x}) failed")
    elif rec.get("item"):
        try:
            pos, cmd = rl.item(rec["item"] - 1)
        except ProgramError:
            detail = (f"{where}: item {rec['item'] - 1} failed (the list has "
                      f"{len(rl.commands)} items)")
        else:
            run = rec["item"] - 1
            loop = (f", pass {run // rl.entries} entry {run % rl.entries} of the loop"
                    if rl.passes > 1 else "")
            detail = f"{where}: item {pos} ({Opcode(cmd.opcode).name}, {cmd.note!r}{loop}) failed"
    else:
        detail = f"{where}: the EXEC_LIST descriptor itself was refused"
    return QueueError(e.queue, e.code, e.index, rec, detail=detail)
