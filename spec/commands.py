"""Encode and decode command descriptors (layouts and the command table generated from
hdl_gen/descriptor.py into spec.descriptors)."""
from . import descriptors as _d
from .descriptors import COMMANDS, DESCRIPTOR_WORDS, ErrorCode, Opcode

#: Payload field layout of every opcode (from the command table).
PAYLOAD_FIELDS = {op: c.fields for op, c in COMMANDS.items()}

__all__ = ["encode", "decode", "put_field", "Opcode", "ErrorCode", "PAYLOAD_FIELDS"]


def put_field(value, layout, name, v):
    """``value`` with field ``name`` of ``layout`` (name -> (lsb, width)) set to ``v``; raises
    ValueError when ``v`` does not fit."""
    lsb, width = layout[name]
    if not isinstance(v, int) or not 0 <= v < (1 << width):
        raise ValueError(f"descriptor field {name!r} = {v!r} does not fit in {width} unsigned bits")
    return value | (v << lsb)


def encode(opcode, *, irq=False, tag=0, **fields):
    """Return the 8 descriptor words for ``opcode`` with payload ``fields`` (unnamed fields are 0).

    Signed fields (``zero_point``) take their two's complement value. Raises ValueError naming
    the field for unknown names or values that do not fit.
    """
    try:
        op = _OPCODES.get(opcode)
    except TypeError:                             # unhashable: Opcode() says what is wrong
        op = None
    opcode = Opcode(opcode) if op is None else op
    layout = PAYLOAD_FIELDS[opcode]
    # word 0: the opcode and the irq flag always fit; the tag as put_field takes it
    value = int(opcode) << _OPCODE_LSB | int(bool(irq)) << _IRQ_LSB
    if isinstance(tag, int) and 0 <= tag < 1 << _TAG_WIDTH:
        value |= tag << _TAG_LSB
    else:
        value = put_field(value, _d.DESCRIPTOR_FIELDS, "tag", tag)
    for name, v in fields.items():
        pos = layout.get(name)
        if pos is None:
            raise ValueError(f"{opcode.name} descriptor has no field {name!r}; "
                             f"fields: {sorted(layout)}")
        if name == "zero_point" and isinstance(v, int) and -128 <= v < 0:
            v &= 0xFF
        if isinstance(v, int) and 0 <= v < (1 << pos[1]):
            value |= v << pos[0]                  # (put_field, without the call)
        else:
            value = put_field(value, layout, name, v)         # raises the ValueError
    return [(value >> (32 * i)) & 0xFFFFFFFF for i in range(DESCRIPTOR_WORDS)]


#: (name, lsb, mask) of the word-0 fields and of each opcode's payload fields, for :func:`decode`
_HEAD = tuple((name, lsb, (1 << width) - 1) for name, (lsb, width) in _d.DESCRIPTOR_FIELDS.items())
_PAYLOAD = {op: tuple((name, lsb, (1 << width) - 1) for name, (lsb, width) in fields.items())
            for op, fields in PAYLOAD_FIELDS.items()}
_OPCODES = {int(op): op for op in Opcode}
_OPCODE_LSB = _d.DESCRIPTOR_FIELDS["opcode"][0]
_IRQ_LSB = _d.DESCRIPTOR_FIELDS["flags.irq"][0]
_TAG_LSB, _TAG_WIDTH = _d.DESCRIPTOR_FIELDS["tag"]


def decode(words):
    """Field dict of a descriptor given as its 8 words (opcode decoded to :class:`Opcode`)."""
    if len(words) != DESCRIPTOR_WORDS:
        raise ValueError(f"a descriptor is {DESCRIPTOR_WORDS} words, not {len(words)}")
    value = 0
    for i, w in enumerate(words):
        value |= (w & 0xFFFFFFFF) << (32 * i)
    out = {name: value >> lsb & mask for name, lsb, mask in _HEAD}
    opcode = out["opcode"] = _OPCODES.get(out["opcode"], out["opcode"])
    for name, lsb, mask in _PAYLOAD.get(opcode, ()):
        out[name] = value >> lsb & mask
    return out
