"""Chip-to-chip link (hdl_gen/chip_link.py): argument checks, lint at several sizes, and the cocotb
tests of ``cocotb_chip_link.py`` on a bench of lanes LinkTx -> ChipLink -> LinkRx.

One simulator build holds several lanes with different latency, width, buffer depth and memory
rows side by side; the cocotb tests drive all lanes in the same cycles (one build, one
simulator process for every parameter set). The fast bench has a lane at the round trip (full
rate), one below it (credit bound) and one above it with a one-beat header; the slow bench
(``make regress``) a long, wide link at the round trip and a narrow one with a 2-beat buffer.
"""
import gc
import json
import subprocess
import warnings

import pytest
from amaranth import Cat, Module
from amaranth.hdl import UnusedElaboratable
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hdl_gen.chip_link import ChipLink, LinkHeader, LinkRx, LinkTx
from hdl_gen.emit import to_verilog
from tools import simbuild

MODULE = "cocotb_tests.cocotb_chip_link"
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {MODULE: simbuild.ALL}
EVENTS = 16


def _mems(dim, spad_rows, acc_rows):
    """(rows, width) of a chip's scratchpad (dim int8) and accumulator (dim int32)."""
    return [[spad_rows, 8 * dim], [acc_rows, 32 * dim]]


#: lanes of each bench: latency (cycles each way), nbytes (link width), depth (buffer beats,
#: the credits), mems (rows, width of the receiving chip's scratchpad and accumulator)
BENCHES = {
    "fast": [
        {"latency": 1, "nbytes": 4, "depth": 3, "mems": _mems(4, 64, 32)},     # depth = round trip
        {"latency": 3, "nbytes": 2, "depth": 4, "mems": _mems(4, 64, 32)},     # depth < round trip 7
        {"latency": 2, "nbytes": 16, "depth": 6, "mems": _mems(8, 48, 24)},    # depth > 5; 1-beat header
    ],
    "slow": [
        {"latency": 8, "nbytes": 8, "depth": 17, "mems": _mems(16, 256, 128)},  # depth = round trip 17
        {"latency": 4, "nbytes": 1, "depth": 2, "mems": _mems(2, 32, 16)},      # depth 2 of 9
    ],
}


class LinkBench(wiring.Component):
    """Lanes ``l<k>_*`` of LinkTx -> ChipLink -> LinkRx, side by side. Per lane: the packet
    streams ``cmd`` and ``rows`` in, the link's controls (``timeout``, ``retrain``, ``down``,
    ``flip``), ``chip_id`` and the memories' ``gnt`` in; out, one ``status`` word (bit 0
    cmd.ready, 1 rows.ready, 2 a beat entered the wire, 3 the sender waits without a credit, 4
    failed, 5 LinkTx busy, 6 event, 7 error, 8 + i memory i's write enable), the sender's
    ``credits``, the writes' address and data, the event's index and value and the error code."""

    def __init__(self, lanes):
        self.lanes = lanes
        members = {}
        for k, ln in enumerate(lanes):
            p, nb = f"l{k}_", ln["nbytes"]
            members.update({
                p + "cmd": In(stream.Signature(LinkHeader)),
                p + "rows": In(stream.Signature(max(w for _, w in ln["mems"]))),
                p + "timeout": In(16), p + "retrain": In(1), p + "down": In(1),
                p + "flip": In(8 * nb + 1), p + "chip_id": In(4), p + "gnt": In(len(ln["mems"])),
                p + "status": Out(8 + len(ln["mems"])), p + "credits": Out(range(ln["depth"] + 1)),
                p + "ev_index": Out(8), p + "ev_value": Out(32), p + "err_code": Out(4),
            })
            for i, (rows, width) in enumerate(ln["mems"]):
                members[p + f"wr{i}_addr"] = Out(max(1, (rows - 1).bit_length()))
                members[p + f"wr{i}_data"] = Out(width)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for k, ln in enumerate(self.lanes):
            port = lambda name: getattr(self, f"l{k}_{name}")
            mems = [tuple(x) for x in ln["mems"]]
            tx = m.submodules[f"tx{k}"] = LinkTx(ln["nbytes"], [w for _, w in mems])
            link = m.submodules[f"link{k}"] = ChipLink(ln["latency"], ln["nbytes"], ln["depth"])
            rx = m.submodules[f"rx{k}"] = LinkRx(ln["nbytes"], mems, EVENTS)
            wiring.connect(m, wiring.flipped(port("cmd")), tx.cmd)
            wiring.connect(m, wiring.flipped(port("rows")), tx.rows)
            wiring.connect(m, tx.link, link.tx)
            wiring.connect(m, link.rx, rx.link)
            m.d.comb += [link.timeout.eq(port("timeout")), link.retrain.eq(port("retrain")),
                         link.fault_down.eq(port("down")), link.fault_flip.eq(port("flip")),
                         rx.chip_id.eq(port("chip_id")), port("credits").eq(link.credits),
                         port("ev_index").eq(rx.event.index), port("ev_value").eq(rx.event.value),
                         port("err_code").eq(rx.error.code)]
            for i, wr in enumerate(rx.wr):
                m.d.comb += [wr.gnt.eq(port("gnt")[i]), port(f"wr{i}_addr").eq(wr.addr),
                             port(f"wr{i}_data").eq(wr.data)]
            sent = link.tx.valid & link.tx.ready & ~link.failed
            m.d.comb += port("status").eq(Cat(
                tx.cmd.ready, tx.rows.ready, sent, link.tx.valid & ~link.tx.ready, link.failed,
                tx.busy, rx.event.valid, rx.error.valid, *[wr.en for wr in rx.wr]))
        return m


def _target(bench):
    lanes = BENCHES[bench]
    return simbuild.amaranth_target(f"kaki_tb_chip_link_{bench}", lambda: LinkBench(lanes))


def test_chip_link_rejects_bad_args():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        for make, exc in ((lambda: ChipLink(latency=0), ValueError),
                          (lambda: ChipLink(depth=1), ValueError),
                          (lambda: ChipLink(nbytes=2.0), TypeError),
                          (lambda: ChipLink(timeout_bits=0), ValueError),
                          (lambda: LinkTx(4, ()), ValueError),
                          (lambda: LinkTx(4, (8, 8, 8, 8, 8)), ValueError),
                          (lambda: LinkRx(4, ((0, 32),)), ValueError),
                          (lambda: LinkRx(4, ((16, 32),), events=0), ValueError)):
            with pytest.raises(exc):
                make()
        gc.collect()


def test_chip_link_contracts_only_in_proofs():
    """The link's and the receiver's contracts reach their own proofs only (docs/formal.md)."""
    from amaranth.back import rtlil
    from hdl_gen.formal import FormalPlatform

    for block in (lambda: ChipLink(2, 2, 5), lambda: LinkRx(4, ((6, 8), (3, 40)), 2)):
        assert "$check" not in rtlil.convert(block(), emit_src=False)
        own = block()
        assert "$check" in rtlil.convert(own, platform=FormalPlatform(target=own), emit_src=False)
    # (ChipLink's buffer is a lib.fifo, which adds its own pointer asserts to any formal build)
    other = rtlil.convert(LinkRx(4, ((6, 8),), 2), platform=FormalPlatform(target=object()),
                          emit_src=False)
    assert "$check" not in other


@pytest.mark.parametrize("latency,nbytes,depth", [(1, 1, 2), (2, 8, 5), (5, 16, 11)])
def test_chip_link_lints(latency, nbytes, depth, tmp_path):
    """Link, packet sender and receiver clean under verilator --lint-only -Wall with only the
    generated-RTL waivers."""
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    blocks = {"kaki_link_lint": ChipLink(latency, nbytes, depth),
              "kaki_link_tx_lint": LinkTx(nbytes, (8 * 4, 32 * 4)),
              "kaki_link_rx_lint": LinkRx(nbytes, ((64, 8 * 4), (32, 32 * 4)), EVENTS),
              "kaki_link_rx1_lint": LinkRx(nbytes, ((2, 8),), 1)}
    for name, block in blocks.items():
        (rtl / f"{name}.v").write_text(to_verilog(block, name))
        r = subprocess.run([simbuild.verilator_bin(), "--lint-only", "-Wall", str(simbuild.WAIVERS),
                            f"rtl/{name}.v", "--top-module", name],
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, (name, r.stderr[-3000:])


@pytest.mark.sim
@pytest.mark.parametrize("bench", [pytest.param(b, marks=pytest.mark.slow) if b == "slow" else b
                                   for b in BENCHES])
def test_chip_link(bench):
    simbuild.run(_target(bench), MODULE, tag=f"chip_link_{bench}",
                 extra_env={"KAKI_LINK_LANES": json.dumps(BENCHES[bench]),
                            "KAKI_LINK_EVENTS": str(EVENTS),
                            "KAKI_REGRESS_LONG": "1" if bench == "slow" else "0"})
