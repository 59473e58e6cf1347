"""Device bring-up: load the control core's firmware from its ELF image and wait until it serves.

:func:`load_firmware` is a device program (:mod:`driver.ops`): hold the core in reset
(``CORE_CTRL.RUN = 0``), stream IMEM and DMEM through ``CORE_MEM_ADDR``/``CORE_MEM_DATA``, release
the core and poll ``FW_STATUS`` until the firmware reports READY.
"""
from spec import registers as R
from spec.firmware_image import DMEM_BASE, IMEM_BASE, FirmwareImage, FirmwareState
from .ops import Read, Wait, Write

__all__ = ["FirmwareError", "load_firmware"]


class FirmwareError(RuntimeError):
    """The firmware did not report READY: it faulted, or did not answer in time.

    ``state`` is its FW_STATUS.STATE; ``pc``, ``cause``, ``tval`` its FW_FAULT_* registers."""

    def __init__(self, msg, state, pc, cause, tval):
        super().__init__(msg)
        self.state, self.pc, self.cause, self.tval = state, pc, cause, tval


def load_firmware(image, *, budget=2_000_000, poll=500):
    """Load ``image`` (a FirmwareImage or an ELF path) and wait up to ``budget`` cycles for READY,
    polling every ``poll`` cycles; returns FW_VERSION. Raises FirmwareError on a fault or timeout."""
    if not isinstance(image, FirmwareImage):
        image = FirmwareImage.from_elf(image)
    yield Write(R.CORE_CTRL, R.CORE_CTRL.RUN.put(0))
    for base, data in ((IMEM_BASE, image.imem), (DMEM_BASE, image.dmem)):
        if not data:
            continue
        yield Write(R.CORE_MEM_ADDR, base)
        data = bytes(data) + bytes(-len(data) % 4)
        for i in range(0, len(data), 4):
            yield Write(R.CORE_MEM_DATA, int.from_bytes(data[i:i + 4], "little"))
    yield Write(R.CORE_CTRL, R.CORE_CTRL.RUN.put(1))
    waited = 0
    while True:
        state = R.FW_STATUS.STATE.get((yield Read(R.FW_STATUS)))
        if state == FirmwareState.READY:
            return (yield Read(R.FW_VERSION))
        if state == FirmwareState.FAULT or waited >= budget:
            pc = yield Read(R.FW_FAULT_PC)
            cause = yield Read(R.FW_FAULT_CAUSE)
            tval = yield Read(R.FW_FAULT_TVAL)
            what = "faulted" if state == FirmwareState.FAULT else f"is not READY after {waited} cycles"
            raise FirmwareError(f"firmware {what}: FW_STATUS.STATE {state}, fault pc {pc:#x} "
                                f"cause {cause:#x} tval {tval:#x}", state, pc, cause, tval)
        yield Wait(poll)
        waited += poll
