"""CSR block generated from the SystemRDL map, driven over AXI4-Lite by cocotbext-axi."""
import pytest

from hdl_gen.csr_block import CsrBlock
from tools import simbuild

#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {"cocotb_tests.cocotb_csr_block": simbuild.ALL}


@pytest.mark.sim
# the block's own build: make regress (make test proves its AXI4-Lite contract, csr_block, and
# exercises every register through the chip's tests)
@pytest.mark.slow
def test_csr_block():
    target = simbuild.amaranth_target("kaki_tb_csr_block", CsrBlock)
    simbuild.run(target, "cocotb_tests.cocotb_csr_block")
