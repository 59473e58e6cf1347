"""Firmware images: the loadable contents of a control-core ELF, placed in IMEM and DMEM."""
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

IMEM_BASE, IMEM_BYTES = 0x0000_0000, 16 * 1024
DMEM_BASE, DMEM_BYTES = 0x1000_0000, 16 * 1024


class FirmwareImageError(ValueError):
    """The ELF is not loadable on the control core; the message names the offending segment."""


@dataclass(frozen=True)
class FirmwareImage:
    """Bytes to place in IMEM and DMEM (each starting at its memory's base) and the entry point."""
    imem: bytes
    dmem: bytes
    entry: int

    @classmethod
    def from_elf(cls, path):
        """Read PT_LOAD segments; raise FirmwareImageError for anything outside IMEM/DMEM."""
        from elftools.elf.elffile import ELFFile

        with open(Path(path), "rb") as f:
            elf = ELFFile(f)
            if elf["e_machine"] != "EM_RISCV" or elf.elfclass != 32:
                raise FirmwareImageError(f"{path}: not a 32-bit RISC-V ELF "
                                         f"({elf['e_machine']}, ELF{elf.elfclass})")
            imem, dmem = bytearray(), bytearray()
            for seg in elf.iter_segments():
                if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                    continue
                addr, size, data = seg["p_paddr"], seg["p_memsz"], seg.data()
                for base, limit, buf in ((IMEM_BASE, IMEM_BYTES, imem), (DMEM_BASE, DMEM_BYTES, dmem)):
                    if base <= addr and addr + size <= base + limit:
                        off = addr - base
                        buf.extend(bytes(max(0, off + size - len(buf))))
                        buf[off:off + len(data)] = data
                        break
                else:
                    raise FirmwareImageError(
                        f"{path}: segment at {addr:#x} of {size} bytes is outside IMEM "
                        f"({IMEM_BASE:#x}+{IMEM_BYTES}) and DMEM ({DMEM_BASE:#x}+{DMEM_BYTES})")
            entry = elf["e_entry"]
        if entry != IMEM_BASE:
            raise FirmwareImageError(f"{path}: entry point {entry:#x} is not the reset vector {IMEM_BASE:#x}")
        return cls(bytes(imem), bytes(dmem), entry)


class FirmwareState(IntEnum):
    """FW_STATUS.STATE values (hdl_gen/kaki_mmio.rdl; firmware/kaki_fw.h mirrors them in C)."""
    RESET = 0
    BOOTING = 1
    READY = 2
    FAULT = 3
