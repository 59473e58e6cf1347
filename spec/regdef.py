"""Register and field records used by the generated :mod:`spec.registers`."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    kind: str     #: const, ro, rw, pulse or w1c (see hdl_gen/kaki_regs.rdl)
    reset: int

    @property
    def mask(self):
        return ((1 << self.width) - 1) << self.lsb

    def get(self, reg_value):
        """This field's value in a register value."""
        return (reg_value >> self.lsb) & ((1 << self.width) - 1)

    def put(self, value):
        """A register value with this field set to ``value`` (other fields zero)."""
        if not 0 <= value < (1 << self.width):
            raise ValueError(f"{self.name}: {value!r} does not fit in {self.width} bits")
        return value << self.lsb


@dataclass(frozen=True)
class Register:
    name: str
    addr: int
    fields: tuple

    def __post_init__(self):
        # each field is also a plain attribute (``REG.FIELD``): no search through the fields on
        # every access (the drivers and models read them in their inner loops)
        for f in self.fields:
            if not hasattr(type(self), f.name) and f.name not in ("name", "addr", "fields"):
                object.__setattr__(self, f.name, f)

    def __getattr__(self, name):
        for f in self.fields:
            if f.name == name:
                return f
        raise AttributeError(f"register {self.name} has no field {name!r}")

    def decode(self, value):
        """All fields of a register value, as a dict."""
        return {f.name: f.get(value) for f in self.fields}
