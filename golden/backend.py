"""The golden backend: the driver's backend interface (docs/driver.md) on the golden chip model.

:class:`GoldenBackend` wraps a ``golden.chip_model.ChipModel`` with the backend interface's
coroutines (docs/driver.md): register and host-memory access act at once, ``wait`` advances the
model, ``wait_interrupt`` runs it until its irq line is high or the limit. Every method yields to
the asyncio event loop once, so several driver coroutines (``asyncio.gather``) interleave; when
nothing else is ready to run (one driver coroutine) the yield is left out: it would come straight
back, in the same order, and costs a pass of the event loop.
"""
import asyncio

__all__ = ["GoldenBackend", "golden_chip"]


async def _yield():
    """``asyncio.sleep(0)`` unless no other callback or task is ready (then it changes nothing: the
    loop would run this task again at once; timers and I/O do not drive the model)."""
    if getattr(asyncio.get_running_loop(), "_ready", True):
        await asyncio.sleep(0)


def golden_chip(dim=8, *, host_bytes=1 << 20, seed=0, engine_delay=(1, 40), **kw):
    """A fresh ChipModel of a ``dim``x``dim`` chip (banks as the chip builds them, spec.chip; 128
    rows per bank to keep the model small), core held in reset (no firmware)."""
    from spec.capabilities import Capabilities

    from .chip_model import ChipModel

    caps = Capabilities.default(dim, spad_bank_rows=128, acc_bank_rows=128)
    return ChipModel(caps, host_bytes=host_bytes, seed=seed, engine_delay=engine_delay, **kw)


class GoldenBackend:
    """Backend interface over a ChipModel (``chip``)."""

    def __init__(self, chip):
        self.chip = chip

    async def read(self, reg):
        await _yield()
        return self.chip.read(reg)

    async def write(self, reg, value):
        await _yield()
        self.chip.write(reg, value)

    async def host_read(self, addr, n):
        await _yield()
        return self.chip.host_read(addr, n)

    async def host_write(self, addr, data):
        await _yield()
        self.chip.host_write(addr, data)

    async def wait(self, cycles):
        await _yield()
        self.chip.run(int(cycles))

    async def wait_interrupt(self, max_cycles):
        await _yield()
        chip = self.chip
        if not chip.irq:
            chip.run(int(max_cycles), until=lambda: chip.irq)
        return chip.irq
