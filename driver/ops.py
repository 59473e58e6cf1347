"""Device programs: host-side sequences written once, run on any backend.

A device program is a generator that yields operations — :class:`Read` / :class:`Write` of a
register (``spec.registers`` definitions), :class:`HostRead` / :class:`HostWrite` of host memory,
:class:`Wait` for some clock cycles — and receives each operation's result. A backend is any object
with ``read(reg)``, ``write(reg, value)``, ``host_read(addr, n)``, ``host_write(addr, data)`` and
``wait(cycles)``: the golden chip model runs programs with :func:`run_sync`, a cocotb testbench
(whose methods are coroutines) with :func:`run_async`. The firmware bring-up
(:mod:`driver.bringup`) and the queue scenarios of ``verif/chip_scenarios.py`` are such programs.
"""
from dataclasses import dataclass

__all__ = ["Read", "Write", "HostRead", "HostWrite", "Wait", "run_sync", "run_async"]


@dataclass(frozen=True)
class Read:
    reg: object


@dataclass(frozen=True)
class Write:
    reg: object
    value: int


@dataclass(frozen=True)
class HostRead:
    addr: int
    n: int


@dataclass(frozen=True)
class HostWrite:
    addr: int
    data: bytes


@dataclass(frozen=True)
class Wait:
    cycles: int


def _apply(dev, op):
    if isinstance(op, Read):
        return dev.read(op.reg)
    if isinstance(op, Write):
        return dev.write(op.reg, op.value)
    if isinstance(op, HostRead):
        return dev.host_read(op.addr, op.n)
    if isinstance(op, HostWrite):
        return dev.host_write(op.addr, op.data)
    if isinstance(op, Wait):
        return dev.wait(op.cycles)
    raise TypeError(f"unknown device operation {op!r}")


def run_sync(program, dev):
    """Run a device program on a synchronous backend; return the program's result."""
    try:
        op = next(program)
        while True:
            op = program.send(_apply(dev, op))
    except StopIteration as stop:
        return stop.value


async def run_async(program, dev):
    """Run a device program on a backend whose methods are awaitable (cocotb)."""
    try:
        op = next(program)
        while True:
            op = program.send(await _apply(dev, op))
    except StopIteration as stop:
        return stop.value
