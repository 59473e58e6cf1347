"""A 2-chip cluster (hdl_gen/cluster.py: two 4x4 chips in a ring, links of 2 cycles, 8 bytes a
beat, 8 credits) under Verilator with one host memory per chip: DMA_PEER writes, events that
release a queue on the receiving chip, and the peer timeout (cocotb_cluster.py). The cluster's
Verilog is generated at test time; its build takes minutes on 2 cores: ``slow`` (make regress)."""
import pytest

from firmware import build as fw_build
from tools import simbuild

MODULE = "cocotb_tests.cocotb_cluster"
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {MODULE: simbuild.ALL}


def _target():
    return simbuild.cluster_target(n=2, dim=4, latency=2, nbytes=8, depth=8)


@pytest.mark.sim
@pytest.mark.slow
def test_cluster_peer_writes():
    simbuild.run(_target(), MODULE, testcase="peer_writes", tag="cluster_peer_writes")


@pytest.mark.sim
@pytest.mark.slow
def test_cluster_peer_event():
    elf = fw_build.shared_elf()
    simbuild.run(_target(), MODULE, testcase="peer_event_releases_a_queue", tag="cluster_peer_event",
                 extra_env={"KAKI_FW_ELF": str(elf)})


@pytest.mark.sim
@pytest.mark.slow
def test_cluster_peer_timeout():
    simbuild.run(_target(), MODULE, testcase="peer_timeout", tag="cluster_peer_timeout")
