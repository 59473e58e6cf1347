"""Completion records (layout generated from hdl_gen/descriptor.py into spec.descriptors.CPL_FIELDS).

A queue's completion area (docs/queues.md) holds the consumer index at +0 and the record of
descriptor ``i`` at ``+16 + 16 * (i mod ring entries)``.
"""
from .descriptors import CPL_FIELDS, RECORD_BITS

RECORD_BYTES = RECORD_BITS // 8

__all__ = ["RECORD_BYTES", "pack_record", "unpack_record", "record_offset"]


def pack_record(**fields):
    """The bytes of a CompletionRecord with ``fields`` (names of CPL_FIELDS; others 0)."""
    value = 0
    for name, v in fields.items():
        lsb, width = CPL_FIELDS[name]
        value |= (int(v) & ((1 << width) - 1)) << lsb
    return value.to_bytes(RECORD_BYTES, "little")


def unpack_record(data):
    """Field dict of a CompletionRecord given as its bytes."""
    value = int.from_bytes(bytes(data), "little")
    return {name: (value >> lsb) & ((1 << width) - 1) for name, (lsb, width) in CPL_FIELDS.items()}


def record_offset(index, log2):
    """Offset of descriptor ``index``'s record in the completion area of a 2**log2-entry ring."""
    return RECORD_BYTES * (1 + index % (1 << log2))
