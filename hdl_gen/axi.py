"""AMBA AXI4 and AXI4-Lite signatures with flat member names.

Members are flat (``awaddr``, ``wlast``…) so a port ``mem: Out(Axi4Signature(...))`` becomes
``mem__awaddr`` in Verilog and binds with ``AxiBus.from_prefix(dut, "mem", bus_separator="__")``.
Both signatures are written from the manager's (master's) side.
"""
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

RESP_OKAY, RESP_EXOKAY, RESP_SLVERR, RESP_DECERR = 0, 1, 2, 3
BURST_INCR = 1


class Axi4LiteSignature(wiring.Signature):
    """AXI4-Lite, manager side: 32-bit data, ``addr_bits`` address."""

    def __init__(self, addr_bits=16):
        super().__init__({
            "awaddr": Out(addr_bits), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_bits), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })


def _members(spec, id_bits):
    """Signature members from ``(name, flow, width)``; the ID members only when ``id_bits``."""
    return {name: flow(width) for name, flow, width in spec
            if id_bits or name not in ("awid", "bid", "arid", "rid")}


def _write_members(addr_bits, data_bits, id_bits):
    return _members((
        ("awid", Out, id_bits), ("awaddr", Out, addr_bits), ("awlen", Out, 8), ("awsize", Out, 3),
        ("awburst", Out, 2), ("awprot", Out, 3), ("awvalid", Out, 1), ("awready", In, 1),
        ("wdata", Out, data_bits), ("wstrb", Out, data_bits // 8), ("wlast", Out, 1),
        ("wvalid", Out, 1), ("wready", In, 1),
        ("bid", In, id_bits), ("bresp", In, 2), ("bvalid", In, 1), ("bready", Out, 1)), id_bits)


def _read_members(addr_bits, data_bits, id_bits):
    return _members((
        ("arid", Out, id_bits), ("araddr", Out, addr_bits), ("arlen", Out, 8), ("arsize", Out, 3),
        ("arburst", Out, 2), ("arprot", Out, 3), ("arvalid", Out, 1), ("arready", In, 1),
        ("rid", In, id_bits), ("rdata", In, data_bits), ("rresp", In, 2), ("rlast", In, 1),
        ("rvalid", In, 1), ("rready", Out, 1)), id_bits)


class Axi4Signature(wiring.Signature):
    """AXI4 full, manager side (INCR bursts; no lock/cache/qos/region/user)."""

    def __init__(self, addr_bits=32, data_bits=64, id_bits=4):
        super().__init__({**_write_members(addr_bits, data_bits, id_bits),
                          **_read_members(addr_bits, data_bits, id_bits)})


class Axi4ReadSignature(wiring.Signature):
    """The read half of :class:`Axi4Signature` (AR and R), same member names; ``id_bits`` 0
    leaves out ``arid``/``rid`` (a manager whose IDs someone else assigns)."""

    def __init__(self, addr_bits=32, data_bits=64, id_bits=4):
        super().__init__(_read_members(addr_bits, data_bits, id_bits))


class Axi4WriteSignature(wiring.Signature):
    """The write half of :class:`Axi4Signature` (AW, W and B); ``id_bits`` as for reads."""

    def __init__(self, addr_bits=32, data_bits=64, id_bits=4):
        super().__init__(_write_members(addr_bits, data_bits, id_bits))


def connect_axi(m, manager, subordinate):
    """Connect an AXI4 ``manager`` interface to a ``subordinate`` port of another ID width.

    ``wiring.connect`` needs identical signatures; here ID fields are truncated towards the
    narrower side (the manager must only use IDs that fit) and zero-extended back.
    """
    for name, member in manager.signature.members.items():
        src, dst = getattr(manager, name), getattr(subordinate, name)
        if member.flow == Out:
            m.d.comb += dst.eq(src)
        else:
            m.d.comb += src.eq(dst)
