"""The generated Python descriptor layout agrees bit for bit with the Amaranth source."""
import random

import pytest
from amaranth import Shape
from amaranth.lib import data

from spec import commands
from spec.descriptors import Opcode
from hdl_gen import descriptor as D

CASES = [(Opcode.DMA_LOAD, "dma", D.DmaCmd), (Opcode.GEMM, "gemm", D.GemmCmd),
         (Opcode.VECTOR, "vec", D.VecCmd)]


def _random_fields(layout, rng):
    out = {}
    for name, field in data.Layout.cast(layout):
        shape = field.shape
        if isinstance(shape, type) and issubclass(shape, data.Struct):
            continue
        if name != "reserved":
            out[name] = rng.getrandbits(Shape.cast(shape).width)
    return out


@pytest.mark.parametrize("opcode,member,layout", CASES)
def test_encode_matches_amaranth_layout(opcode, member, layout):
    rng = random.Random(1234)
    for _ in range(50):
        fields = _random_fields(layout, rng)
        tag = rng.getrandbits(16)
        words = commands.encode(opcode, irq=True, tag=tag, **fields)
        value = sum(w << (32 * i) for i, w in enumerate(words))
        ref = data.Layout.cast(D.Descriptor).const(
            {"opcode": int(opcode), "flags": {"irq": 1}, "tag": tag,
             "payload": {member: fields}}).as_value().value
        assert value == ref
        decoded = commands.decode(words)
        assert all(decoded[k] == v for k, v in fields.items())


def test_encode_rejects_bad_fields():
    with pytest.raises(ValueError, match="'m'"):
        commands.encode(Opcode.GEMM, m=1 << 16)
    with pytest.raises(ValueError, match="no field 'rows'"):
        commands.encode(Opcode.GEMM, rows=1)
    with pytest.raises(ValueError, match="zero_point"):
        commands.encode(Opcode.VECTOR, zero_point=-129)


def test_negative_zero_point_is_twos_complement():
    words = commands.encode(Opcode.VECTOR, zero_point=-1)
    assert commands.decode(words)["zero_point"] == 0xFF
