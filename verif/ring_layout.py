"""Where a command-queue scenario puts things in host memory, and one queue's host-side
configuration (docs/queues.md "Host programming sequence"): :class:`QueueConfig` (ring, completion
area, DMA window), :class:`Layout` (rings, completion areas and data buffers of all queues) and the
small helpers the workload builder, the host queue driver and the scoreboard share.
"""
from dataclasses import dataclass

from spec import registers as R
from spec.chip import QUEUES
from spec.completion import RECORD_BYTES, record_offset

DESC_BYTES = 32
M32 = 0xFFFF_FFFF


def reg(name, i):
    """The register ``name`` of queue/event ``i`` (``reg("Q_DOORBELL", 2)``)."""
    return R.REGISTERS[f"{name}{i}"]


@dataclass(frozen=True)
class QueueConfig:
    """One queue's host-side configuration (docs/queues.md "Host programming sequence")."""
    ring_base: int
    log2: int
    cpl_base: int
    window_base: int
    window_size: int

    @property
    def entries(self):
        return 1 << self.log2

    def record_addr(self, index):
        return self.cpl_base + record_offset(index, self.log2)

    def cpl_bytes(self):
        return RECORD_BYTES * (1 + self.entries)


RING_AREA = 0x1000       # host bytes reserved per ring (LOG2 <= 7)
CPL_AREA = 0x1000        # host bytes reserved per completion area


@dataclass(frozen=True)
class Layout:
    """Where rings, completion areas and data buffers live in host memory."""
    host_bytes: int
    ring_area: int = 0x1000
    cpl_area: int = 0x1000 + QUEUES * RING_AREA
    data_base: int = 0x1000 + QUEUES * (RING_AREA + CPL_AREA)

    def ring_base(self, q):
        return self.ring_area + q * RING_AREA

    def cpl_base(self, q):
        return self.cpl_area + q * CPL_AREA


def in_host(layout, addr, n):
    """``[addr, addr + n)`` is ordinary host memory (not the DECERR region the scenario uses)."""
    return 0 <= addr and addr + n <= layout.host_bytes


def ts_after(a, b):
    """Timestamp ``a`` is later than ``b`` (32-bit wrapping cycle counts)."""
    return 0 < (a - b) & M32 < 0x8000_0000
