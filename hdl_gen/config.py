"""Chip configuration: the parameters every block is built from and the capability registers report."""
from dataclasses import dataclass


def _is_pow2(x):
    return x > 0 and (x & (x - 1)) == 0


@dataclass(frozen=True)
class KakiConfig:
    """Build-time parameters of one Kaki chip.

    The PE array is square (``dim`` × ``dim``): a scratchpad row holds one ``dim``-element int8 vector
    (an A row segment or a B tile row) and an accumulator row one ``dim``-element int32 vector.
    """
    dim: int = 8                 # PE array rows = columns
    spad_banks: int = 4          # scratchpad banks (double buffering: DMA and PE array in different banks)
    spad_bank_rows: int = 4096   # rows of `dim` int8 per scratchpad bank
    acc_banks: int = 2           # accumulator banks
    acc_bank_rows: int = 4096    # rows of `dim` int32 per accumulator bank
    axi_data_bits: int = 64      # DMA AXI4 master data width
    axi_addr_bits: int = 32      # DMA AXI4 master address width (host addresses must fit)
    axi_id_bits: int = 4
    max_burst_beats: int = 16    # AXI INCR burst length limit (never across 4 KiB)
    dma_outstanding: int = 8     # AXI reads in flight per DMA load channel
    queues: int = 4              # hardware command queues (kaki_regs.rdl sizes its Q_* arrays to match)
    events: int = 16             # event counters (kaki_regs.rdl / kaki_mmio.rdl EVENT arrays match)
    fifo_depth: int = 4          # commands each engine's dispatcher FIFO holds (CAP_QUEUES.FIFO_DEPTH)
    prefetch: int = 4            # descriptors each queue prefetches (CAP_QUEUES.PREFETCH)
    cpl_depth: int = 4           # completion requests the queue controller's writer holds
    retire_depth: int = 8        # per-engine retire FIFO the issue unit drains (> fifo_depth + 1)
    inflight: int = 16           # descriptors per queue popped and without a completion request (issue unit window)
    # cycles from a granted scratchpad/accumulator read to its data: 1; 2 with the banks' read
    # ports registered (every block-RAM pin driven by a flip-flop); 3 with each bank's output
    # registered too (no block-RAM output drives logic; BankedMemory)
    mem_read_latency: int = 3
    # special-function unit lanes: elements of a segment it computes per cycle (a power of two up
    # to dim); each lane carries its own multipliers and exponential table, so this trades the
    # SFU's throughput against its area (docs/architecture.md)
    sfu_lanes: int = 1

    def __post_init__(self):
        if not (_is_pow2(self.dim) and 2 <= self.dim <= 32):
            raise ValueError(f"dim must be a power of two in 2..32, not {self.dim!r}")
        for name in ("spad_banks", "spad_bank_rows", "acc_banks", "acc_bank_rows"):
            if not _is_pow2(getattr(self, name)):
                raise ValueError(f"{name} must be a power of two, not {getattr(self, name)!r}")
        if self.axi_data_bits not in (32, 64, 128):
            raise ValueError(f"axi_data_bits must be 32, 64 or 128, not {self.axi_data_bits!r}")
        if not 12 < self.axi_addr_bits <= 48:
            raise ValueError(f"axi_addr_bits must be in 13..48, not {self.axi_addr_bits!r}")
        if not 1 <= self.max_burst_beats <= 256:
            raise ValueError(f"max_burst_beats must be in 1..256, not {self.max_burst_beats!r}")
        if not _is_pow2(self.fifo_depth) or self.retire_depth <= self.fifo_depth + 1:
            raise ValueError(f"fifo_depth must be a power of two below retire_depth - 1, not "
                             f"fifo_depth={self.fifo_depth!r} retire_depth={self.retire_depth!r}")
        if not (_is_pow2(self.sfu_lanes) and self.sfu_lanes <= self.dim):
            raise ValueError(f"sfu_lanes must be a power of two up to dim={self.dim}, not "
                             f"{self.sfu_lanes!r}")
        if self.mem_read_latency not in (1, 2, 3):
            raise ValueError(f"mem_read_latency must be 1, 2 or 3, not {self.mem_read_latency!r}")
        if not (_is_pow2(self.inflight) and 2 <= self.inflight <= 64):
            raise ValueError(f"inflight must be a power of two in 2..64, not {self.inflight!r}")
        if not 2 <= self.prefetch <= 255 or not 2 <= self.cpl_depth <= 15:
            raise ValueError(f"prefetch must be in 2..255 and cpl_depth in 2..15, not "
                             f"{self.prefetch!r} and {self.cpl_depth!r}")

    @property
    def spad_rows(self):
        return self.spad_banks * self.spad_bank_rows

    @property
    def acc_rows(self):
        return self.acc_banks * self.acc_bank_rows

    @property
    def spad_addr_bits(self):
        return (self.spad_rows - 1).bit_length()

    @property
    def acc_addr_bits(self):
        return (self.acc_rows - 1).bit_length()

    @property
    def spad_row_bytes(self):
        return self.dim

    @property
    def acc_row_bytes(self):
        return self.dim * 4

    @property
    def name(self):
        return f"{self.dim}x{self.dim}"


#: The array sizes every block must build and pass at.
ARRAY_SIZES = (4, 8, 16)
