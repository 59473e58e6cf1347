"""Requester-side ports of the banked scratchpad and accumulator memories.

A requester drives ``en`` and ``addr`` (a row index); the memory answers with ``gnt`` in the same
cycle. A granted read returns ``data`` in the next cycle (one-cycle latency, registered); a granted
write takes effect at the end of the cycle. A requester that is not granted simply retries: the
memory never queues requests. Rows are packed little-endian: element ``c`` of a scratchpad row is
bits ``[8c, 8c+8)``, of an accumulator row bits ``[32c, 32c+32)``.
"""
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class ReadPortSignature(wiring.Signature):
    """Read requester: ``addr`` Out(addr_bits), ``en`` Out(1), ``gnt`` In(1), ``data`` In(width).

    ``data`` is the row at ``addr`` in the cycle after one with ``en`` and ``gnt`` high, and is
    undefined in every other cycle: a requester that needs it later keeps its own copy (the
    banked memory's ``rd.data`` proof)."""

    def __init__(self, addr_bits, width):
        self.addr_bits, self.width = addr_bits, width
        super().__init__({"addr": Out(addr_bits), "en": Out(1), "gnt": In(1), "data": In(width)})


class WritePortSignature(wiring.Signature):
    """Write requester: ``addr`` Out(addr_bits), ``en`` Out(1), ``gnt`` In(1), ``data`` Out(width)."""

    def __init__(self, addr_bits, width):
        self.addr_bits, self.width = addr_bits, width
        super().__init__({"addr": Out(addr_bits), "en": Out(1), "gnt": In(1), "data": Out(width)})
