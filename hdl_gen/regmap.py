"""The register map, read from the SystemRDL source (``kaki_regs.rdl``) with systemrdl-compiler.

Everything that needs register addresses or fields (the CSR block, the generated Python/C/docs)
goes through :func:`load`, so no address or field offset is ever typed twice.
"""
import functools
from dataclasses import dataclass
from pathlib import Path

RDL = Path(__file__).with_name("kaki_regs.rdl")

#: Field kinds the CSR block implements (see the header of kaki_regs.rdl).
KINDS = ("const", "ro", "rw", "wstrobe", "pulse", "w1c")


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    kind: str
    reset: int
    desc: str

    @property
    def mask(self):
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    name: str            #: RDL instance name, e.g. ``CMD``
    index: object        #: array index, or None
    addr: int            #: byte offset in the CSR space
    fields: tuple
    title: str
    desc: str

    @property
    def ident(self):
        """Unique identifier: ``CMD3`` for element 3 of ``CMD``, else the name."""
        return self.name if self.index is None else f"{self.name}{self.index}"

    def field(self, name):
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.ident} has no field {name!r}")


def _kind(f):
    from systemrdl.rdltypes import OnWriteType
    sw, hw = str(f.get_property("sw")), str(f.get_property("hw"))
    if f.get_property("onwrite") == OnWriteType.woclr and f.get_property("hwset"):
        return "w1c"
    if f.get_property("singlepulse"):
        return "pulse"
    if sw == "AccessType.r" and hw == "AccessType.na":
        return "const"
    if sw == "AccessType.r" and hw == "AccessType.w":
        return "ro"
    if sw == "AccessType.rw" and hw == "AccessType.r":
        return "wstrobe" if f.get_property("swmod") else "rw"
    raise ValueError(f"field {f.get_path()}: sw={sw} hw={hw} is not a kind the CSR block implements")


@functools.cache
def load(path=RDL):
    """Parse and elaborate the RDL; return the registers as a tuple sorted by address."""
    from systemrdl import RDLCompiler
    from systemrdl.node import RegNode

    rdlc = RDLCompiler()
    rdlc.compile_file(str(path))
    top = rdlc.elaborate().top
    regs = []
    for node in top.descendants(unroll=True):
        if not isinstance(node, RegNode):
            continue
        fields = tuple(
            Field(f.inst_name, f.lsb, f.width, _kind(f), f.get_property("reset") or 0,
                  " ".join((f.get_property("desc") or "").split()))
            for f in node.fields())
        idx = node.current_idx[0] if node.current_idx else None
        regs.append(Register(node.inst_name, idx, node.absolute_address, fields,
                             node.get_property("name") or node.inst_name,
                             " ".join((node.get_property("desc") or "").split())))
    regs.sort(key=lambda r: r.addr)
    return tuple(regs)


def by_ident(path=RDL):
    return {r.ident: r for r in load(path)}


def addr_bits(path=RDL):
    """Address bits the CSR space needs (at least 12: a 4 KiB page)."""
    return max(12, max(r.addr for r in load(path)).bit_length())


def port_name(reg, field):
    """Name of the CSR block port of ``field`` in ``reg``: ``<ident>_<field>`` in lower case."""
    return f"{reg.ident}_{field.name}".lower()
