"""A cluster of Kaki chips in a ring, joined by chip-to-chip links (docs/cluster_hw.md).

Chip ``i`` (a whole :class:`~hdl_gen.soc.KakiSoc` built with a :class:`~hdl_gen.soc.SocLink`,
``chip_id`` strapped to ``i``) sends on its ``link_out`` lane through a
:class:`~hdl_gen.chip_link.LinkWire` of ``latency`` cycles to chip ``(i + 1) % n``'s ``link_in``:
a ring, every transfer to the next chip. A chip's LINK_CTRL.RETRAIN resets its sender, the wire
and the next chip's receiver in the same cycle.

Ports (per chip ``i``; Amaranth joins interface members with ``__``: ``c0_csr__awaddr``)
-----------------------------------------------------------------------------------------
c<i>_csr : In(Axi4LiteSignature) — chip i's register port.
c<i>_mem : Out(Axi4Signature) — chip i's host-memory master (one host memory per chip).
c<i>_irq : Out(1) — chip i's interrupt.
l<i>_fault_down : In(1) — the wire from chip i to chip i + 1 drops what enters it (both ways).
l<i>_fault_flip : In(8 * nbytes + 1) — bits flipped in the beat entering that wire.
"""
from amaranth import Module, ResetInserter
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import regmap
from .axi import Axi4LiteSignature, Axi4Signature
from .chip_link import LinkWire
from .config import KakiConfig
from .soc import KakiSoc, SocLink

__all__ = ["KakiCluster"]


class KakiCluster(wiring.Component):
    """``n`` chips (2..16) of configuration ``config`` in a ring; ``link`` (a :class:`SocLink`:
    bytes per beat, receiver depth, timeout width) and ``latency`` (cycles each way on a wire)."""

    def __init__(self, n=2, config=KakiConfig(), link=SocLink(), latency=2):
        if not isinstance(n, int) or not 2 <= n <= 16:
            raise ValueError(f"n must be 2..16 chips (LinkHeader.dest is 4 bits), not {n!r}")
        if not isinstance(latency, int) or latency < 1:
            raise ValueError(f"latency must be an int >= 1, not {latency!r}")
        self.n, self.config, self.link, self.latency = n, config, link, latency
        members = {}
        for i in range(n):
            members[f"c{i}_csr"] = In(Axi4LiteSignature(regmap.addr_bits()))
            members[f"c{i}_mem"] = Out(Axi4Signature(config.axi_addr_bits, config.axi_data_bits,
                                                     config.axi_id_bits))
            members[f"c{i}_irq"] = Out(1)
        for i in range(n):
            members[f"l{i}_fault_down"] = In(1)
            members[f"l{i}_fault_flip"] = In(8 * link.nbytes + 1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        chips = [KakiSoc(self.config, link=self.link) for _ in range(self.n)]
        for i, chip in enumerate(chips):
            m.submodules[f"chip{i}"] = chip
            wiring.connect(m, wiring.flipped(getattr(self, f"c{i}_csr")), chip.csr)
            wiring.connect(m, chip.mem, wiring.flipped(getattr(self, f"c{i}_mem")))
            m.d.comb += [getattr(self, f"c{i}_irq").eq(chip.irq), chip.chip_id.eq(i)]
        for i, chip in enumerate(chips):
            nxt = chips[(i + 1) % self.n]
            wire = LinkWire(self.latency, self.link.nbytes)
            m.submodules[f"wire{i}"] = ResetInserter({"sync": chip.link_retrain})(wire)
            wiring.connect(m, chip.link_out, wire.a)
            wiring.connect(m, wire.b, nxt.link_in)
            m.d.comb += [nxt.link_retrain_in.eq(chip.link_retrain),
                         wire.fault_down.eq(getattr(self, f"l{i}_fault_down")),
                         wire.fault_flip.eq(getattr(self, f"l{i}_fault_flip"))]
        return m
