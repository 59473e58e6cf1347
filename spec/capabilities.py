"""Chip capabilities as software discovers them from the ID/CAP_* registers."""
from dataclasses import dataclass

from . import chip
from . import registers as R


class DeviceIdError(RuntimeError):
    """The ID register does not read 'KAKI': wrong device or broken register path."""


@dataclass(frozen=True)
class Capabilities:
    dim: int
    spad_banks: int
    spad_bank_rows: int
    acc_banks: int
    acc_bank_rows: int
    dma_data_bytes: int
    dma_max_burst: int
    dma_outstanding: int
    addr_bits: int
    queues: int
    fifo_depth: int
    version: tuple

    @property
    def spad_rows(self):
        return self.spad_banks * self.spad_bank_rows

    @property
    def acc_rows(self):
        return self.acc_banks * self.acc_bank_rows

    @classmethod
    def from_values(cls, read):
        """Build from ``read(register) -> int`` (a synchronous register read)."""
        magic = read(R.ID)
        if magic != R.ID.MAGIC.reset:
            raise DeviceIdError(f"ID register reads {magic:#010x}, expected {R.ID.MAGIC.reset:#010x}")
        arr, spad, acc, dma, q, ver = (read(r) for r in (R.CAP_ARRAY, R.CAP_SPAD, R.CAP_ACC,
                                                         R.CAP_DMA, R.CAP_QUEUES, R.VERSION))
        if R.CAP_ARRAY.ROWS.get(arr) != R.CAP_ARRAY.COLS.get(arr):
            raise DeviceIdError(f"non-square PE array {arr:#x} is not supported by this driver")
        return cls(
            dim=R.CAP_ARRAY.ROWS.get(arr),
            spad_banks=R.CAP_SPAD.BANKS.get(spad), spad_bank_rows=R.CAP_SPAD.BANK_ROWS.get(spad),
            acc_banks=R.CAP_ACC.BANKS.get(acc), acc_bank_rows=R.CAP_ACC.BANK_ROWS.get(acc),
            dma_data_bytes=R.CAP_DMA.DATA_BYTES.get(dma), dma_max_burst=R.CAP_DMA.MAX_BURST.get(dma),
            dma_outstanding=R.CAP_DMA.OUTSTANDING.get(dma), addr_bits=R.CAP_DMA.ADDR_BITS.get(dma),
            queues=R.CAP_QUEUES.QUEUES.get(q), fifo_depth=R.CAP_QUEUES.FIFO_DEPTH.get(q),
            version=(R.VERSION.MAJOR.get(ver), R.VERSION.MINOR.get(ver)))

    @classmethod
    def from_config(cls, cfg):
        """The capabilities a chip built from ``cfg`` reports: any object with the fields of
        ``hdl_gen.config.KakiConfig`` (which this package does not import)."""
        return cls(dim=cfg.dim, spad_banks=cfg.spad_banks, spad_bank_rows=cfg.spad_bank_rows,
                   acc_banks=cfg.acc_banks, acc_bank_rows=cfg.acc_bank_rows,
                   dma_data_bytes=cfg.axi_data_bits // 8, dma_max_burst=cfg.max_burst_beats,
                   dma_outstanding=cfg.dma_outstanding, addr_bits=cfg.axi_addr_bits,
                   queues=cfg.queues, fifo_depth=cfg.fifo_depth,
                   version=(R.VERSION.MAJOR.reset, R.VERSION.MINOR.reset))

    @classmethod
    def default(cls, dim=chip.DEFAULTS["dim"], **overrides):
        """The capabilities of a ``dim`` x ``dim`` chip built with KakiConfig's defaults (spec.chip)
        but for ``overrides`` (KakiConfig field names)."""
        unknown = set(overrides) - set(chip.DEFAULTS)
        if unknown:
            raise TypeError(f"unknown chip parameters {sorted(unknown)}; known: {sorted(chip.DEFAULTS)}")
        if dim not in chip.ARRAY_SIZES:
            raise ValueError(f"array size {dim!r} is not built; built sizes: {chip.ARRAY_SIZES}")
        from types import SimpleNamespace
        return cls.from_config(SimpleNamespace(**{**chip.DEFAULTS, "dim": dim, **overrides}))
