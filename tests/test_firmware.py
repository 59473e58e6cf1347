"""Firmware: it builds with ziglang's clang, loads as an image, and rejects bad ELFs."""
import subprocess
import sys

import pytest

from spec.firmware_image import IMEM_BYTES, FirmwareImage, FirmwareImageError
from firmware import build as fw_build


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    return fw_build.build(tmp_path_factory.mktemp("fw") / "kaki_fw.elf")


def test_firmware_builds_and_loads(elf):
    image = FirmwareImage.from_elf(elf)
    assert image.entry == 0
    assert 0 < len(image.imem) <= IMEM_BYTES
    # The first instruction sets up the stack (auipc/lui): a real RV32 word, not zeros.
    first = int.from_bytes(image.imem[:4], "little")
    assert first & 0x7F in (0x17, 0x37), f"unexpected first instruction {first:#010x}"


def test_segment_outside_memories_is_rejected(tmp_path):
    script = tmp_path / "bad.ld"
    script.write_text("ENTRY(_start) SECTIONS { . = 0x30000000; .text : { *(.text*) } }\n")
    src = tmp_path / "bad.S"
    src.write_text(".globl _start\n_start: j _start\n")
    out = tmp_path / "bad.elf"
    res = subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target",
                          "riscv32-freestanding-none", "-nostdlib", "-T", str(script), "-o",
                          str(out), str(src)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with pytest.raises(FirmwareImageError, match="0x30000000"):
        FirmwareImage.from_elf(out)


def test_version_comes_from_pyproject():
    (major, minor, patch), packed = fw_build.version()
    assert packed == (major << 16) | (minor << 8) | patch


def test_firmware_boots_on_the_iss(elf):
    """The ELF runs on the golden ISS: reports its version, then READY, enables the issue unit
    (docs/queues.md "Firmware"), then sleeps in WFI."""
    from spec import mmio_registers as M
    from golden.rv32_iss import RV32ISS
    from spec.firmware_image import DMEM_BASE

    base = 0x2000_0000
    iss = RV32ISS.from_elf(elf)
    image = FirmwareImage.from_elf(elf)
    assert bytes(iss.dmem[:len(image.dmem)]) == image.dmem and DMEM_BASE == 0x1000_0000
    steps = iss.run(10_000)
    writes = {addr - base: value for addr, value, _ in iss.mmio.writes}
    assert writes.get(M.FW_VERSION.addr) == fw_build.version()[1]
    assert writes.get(M.FW_STATUS.addr) == 2, f"FW_STATUS writes: {iss.mmio.writes}"
    assert iss.sleeping, f"firmware did not reach its WFI service loop within {steps} steps"
    order = [addr - base for addr, _, _ in iss.mmio.writes]
    assert order == [M.FW_STATUS.addr, M.FW_VERSION.addr, M.FW_STATUS.addr, M.ISSUE.addr]
    assert writes[M.ISSUE.addr] == M.ISSUE.ENABLE.put(1)
