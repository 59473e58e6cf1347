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

    def __getattr__(self, name):
        for f in self.fields:
            if f.name == name:
                return f
        raise AttributeError(f"register {self.name} has no field {name!r}")

    def decode(self, value):
        """All fields of a register value, as a dict."""
        return {f.name: f.get(value) for f in self.fields}
