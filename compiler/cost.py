"""Cost model: predicted engine cycles per command, from the capabilities.

* DMA (load or store): ``DMA_SETUP + planes * rows * max(1, ceil(row_bytes / bus_bytes))`` —
  one bus beat per ``dma_data_bytes`` of a row, at least one cycle per (possibly zero-length)
  row, plus the validation / first-access latency.
* GEMM: ``GEMM_SETUP + n_tiles * k_tiles * (m + dim) + 2 * dim`` — per (k, n) tile ``dim``
  cycles to load the B tile and ``m`` cycles to stream the A rows (docs/architecture.md, "GEMM
  dataflow"), plus the array fill/drain. Calibrated on the RTL: ``make bench`` (dim 8) measures
  658 busy cycles for a 32×32×32 GEMM and 4626 for 64×64×64, exactly this formula.
* VECTOR: ``VEC_SETUP + rows`` (one accumulator row per cycle) ``+ VEC_PIPE``.

DMA and vector constants are estimates (not yet calibrated against the RTL's PERF counters).
* SIGNAL_EVENT / WAIT_EVENT / BARRIER / NOP: ``FW_EVENT`` cycles of firmware time (docs/queues.md
  "Costs": ~129 cycles per firmware-only descriptor); engine commands additionally pay
  ``DISPATCH`` cycles of firmware forwarding, reported separately by :func:`summary`.
"""
from driver.descriptors import Opcode

from .dma import ceil_div

__all__ = ["command_cycles", "program_cycles", "summary", "tiling_cost"]

DMA_SETUP = 16
GEMM_SETUP = 2
VEC_SETUP = 4
VEC_PIPE = 6
FW_EVENT = 129
DISPATCH = 260


def dma_cycles(rows, planes, row_bytes, caps):
    return DMA_SETUP + planes * rows * max(1, ceil_div(row_bytes, caps.dma_data_bytes))


def gemm_cycles(m, k_tiles, n_tiles, caps):
    return GEMM_SETUP + n_tiles * k_tiles * (m + caps.dim) + 2 * caps.dim


def command_cycles(cmd, caps):
    """Predicted engine cycles of a ProgramCommand (or anything with ``opcode`` and ``fields``)."""
    op, f = Opcode(cmd.opcode), cmd.fields
    if op in (Opcode.DMA_LOAD, Opcode.DMA_STORE):
        return dma_cycles(f["rows"], f["planes"], f["row_bytes"], caps)
    if op == Opcode.GEMM:
        return gemm_cycles(f["m"], f["k_tiles"], f["n_tiles"], caps)
    if op == Opcode.VECTOR:
        return VEC_SETUP + f["rows"] + VEC_PIPE
    return FW_EVENT


def program_cycles(program, caps):
    """Predicted cycles of every command, aligned with ``program.commands``."""
    return [command_cycles(c, caps) for c in program.commands]


def summary(program, cycles):
    """Per-queue and per-engine totals and a lower bound on the run time (the busiest engine or
    the firmware's dispatch work, whichever is larger)."""
    engines = {Opcode.DMA_LOAD: "dma_load", Opcode.DMA_STORE: "dma_store", Opcode.GEMM: "gemm",
               Opcode.VECTOR: "vector"}
    per_engine, per_queue, firmware = {}, {}, 0
    for c, cy in zip(program.commands, cycles):
        per_queue[c.queue] = per_queue.get(c.queue, 0) + cy
        name = engines.get(Opcode(c.opcode))
        if name:
            per_engine[name] = per_engine.get(name, 0) + cy
            firmware += DISPATCH
        else:
            firmware += FW_EVENT
    bound = max([firmware] + list(per_engine.values()))
    return dict(engines=per_engine, queues=per_queue, firmware=firmware, commands=len(cycles),
                bound=bound, serial=sum(cycles))


def tiling_cost(m, k, n, tm, kc, ng, caps):
    """Predicted cycles of a GEMM tiled as (tm, kc, ng): the busiest of load / compute / firmware
    (the pipeline overlaps them), used by the tiling pass to choose tile sizes."""
    dim = caps.dim
    kt, nt = ceil_div(k, dim), ceil_div(n, dim)
    mtiles, ngroups, ksteps = ceil_div(m, tm), ceil_div(nt, ng), ceil_div(kt, kc)
    steps = mtiles * ngroups * ksteps
    bus = caps.dma_data_bytes
    load = (ngroups * m * kt * max(1, ceil_div(dim, bus))          # A, reloaded per n-group
            + mtiles * kt * dim * nt * max(1, ceil_div(dim, bus))  # W, reloaded per m-tile
            + steps * 3 * DMA_SETUP)
    compute = steps * (GEMM_SETUP + 2 * dim) + mtiles * nt * kt * (tm + dim) + mtiles * nt * (VEC_SETUP + tm)
    firmware = steps * (4 * DISPATCH + 4 * FW_EVENT) + mtiles * ngroups * ng * DISPATCH
    return max(load, compute, firmware) + 0.01 * (load + compute + firmware)
