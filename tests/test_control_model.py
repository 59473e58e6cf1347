"""The golden control model runs the firmware the chip test runs, with the same observable results."""
import pytest
from elftools.elf.elffile import ELFFile

from spec import mmio_registers as M
from spec.firmware_image import FirmwareImage, FirmwareState
from firmware import build as fw_build
from golden.control_model import ControlModel, FirmwareTimeout


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    return fw_build.build(tmp_path_factory.mktemp("fw") / "kaki_fw.elf")


def test_boot_reports_version_and_sleeps(elf):
    model = ControlModel()
    assert model.load_firmware(FirmwareImage.from_elf(elf)) == fw_build.version()[1]
    assert model.iss.sleeping


def test_hold_resets_firmware_registers(elf):
    model = ControlModel()
    model.load_firmware(FirmwareImage.from_elf(elf))
    model.hold()
    assert model.regs[M.FW_STATUS] == 0 and model.regs[M.FW_VERSION] == 0
    with pytest.raises(RuntimeError, match="held in reset"):
        model.running = True
        model.load(FirmwareImage.from_elf(elf))


def test_illegal_instruction_is_reported_as_fault_then_reload_works(elf):
    """Same scenario as the RTL chip test firmware_boots_faults_and_reloads."""
    image = FirmwareImage.from_elf(elf)
    with open(elf, "rb") as f:
        main = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name("main")[0]["st_value"]
    bad = bytearray(image.imem)
    bad[main:main + 4] = b"\xff\xff\xff\xff"
    model = ControlModel()
    with pytest.raises(FirmwareTimeout, match="cause 0x2"):
        model.load_firmware(FirmwareImage(bytes(bad), image.dmem, 0))
    assert M.FW_STATUS.STATE.get(model.regs[M.FW_STATUS]) == FirmwareState.FAULT
    assert model.regs[M.FW_FAULT_PC] == main
    assert model.regs[M.FW_FAULT_TVAL] == 0xFFFFFFFF
    assert model.load_firmware(image) == fw_build.version()[1]
