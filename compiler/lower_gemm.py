"""Lower one int8 GEMM with a fused bias + requantize (+ ReLU) epilogue to Kaki commands.

Host tensors are row-major: ``A[M, K]`` and ``B[K, N]`` int8, ``bias``/``mult``/``shift`` int32
``[N]``, output ``Y[M, N]`` int8. The DMA's strides do the tiling: A is loaded as K/dim planes of M
scratchpad rows, B as N/dim tiles of K rows, so no host-side repacking is needed. Edges are zero
padded by the loads (columns) or by zero-row loads (B's K edge).

The result is four phases (loads, GEMM, epilogue, stores) that must run in order; the last command
of each phase asks for a completion interrupt so the host can wait on it.
"""
from dataclasses import dataclass

from spec.descriptors import Opcode

from .dma import Command, align as _align, ceil_div as _ceil_div, tiled_dma as _tiled_dma
from .errors import CompileError

__all__ = ["Command", "HostLayout", "GemmPlan", "plan_gemm", "load_operands", "load_epilogue_params",
           "gemm_command", "epilogue_commands", "store_output", "lower_gemm_epilogue", "host_layout",
           "encode_phases", "store_accumulator", "with_irq"]


@dataclass(frozen=True)
class HostLayout:
    """Byte addresses of the operands in host memory."""
    a: int
    b: int
    bias: int
    mult: int
    shift: int
    out: int


@dataclass(frozen=True)
class GemmPlan:
    """Where one GEMM lives on chip (row addresses) and in host memory (byte addresses)."""
    m: int
    k: int
    n: int
    dim: int
    host: HostLayout
    a_spad: int
    b_spad: int
    out_spad: int
    c_acc: int
    param_acc: int

    @property
    def k_tiles(self):
        return _ceil_div(self.k, self.dim)

    @property
    def n_tiles(self):
        return _ceil_div(self.n, self.dim)

    @property
    def b_tile_stride(self):
        return self.k_tiles * self.dim


def plan_gemm(m, k, n, caps, host, name="gemm", with_output=True):
    """Place A, B, C, the epilogue parameters and the output on chip; raise CompileError if not.

    ``with_output=False`` plans the GEMM alone (no epilogue parameters, no int8 output rows).
    """
    for label, v, hi in (("M", m, 0xFFFF), ("K", k, 0xFFF * caps.dim), ("N", n, 0xFFF * caps.dim)):
        if not 1 <= v <= hi:
            raise CompileError(name, f"{label}={v} is outside 1..{hi}")
    dim = caps.dim
    kt, nt = _ceil_div(k, dim), _ceil_div(n, dim)
    # Operands in separate banks where possible, so DMA and compute do not contend.
    a_spad = 0
    b_spad = _align(a_spad + kt * m, caps.spad_bank_rows)
    out_spad = _align(b_spad + nt * kt * dim, caps.spad_bank_rows)
    spad_end = out_spad + nt * m if with_output else b_spad + nt * kt * dim
    if spad_end > caps.spad_rows:
        raise CompileError(name, f"{m}x{k}x{n} needs {spad_end} scratchpad rows, "
                                 f"the chip has {caps.spad_rows} (tile the GEMM)")
    c_acc = 0
    param_acc = c_acc + nt * m
    acc_end = param_acc + 3 * nt if with_output else param_acc
    if acc_end > caps.acc_rows:
        raise CompileError(name, f"{m}x{k}x{n} needs {acc_end} accumulator rows, "
                                 f"the chip has {caps.acc_rows}")
    return GemmPlan(m, k, n, dim, host, a_spad, b_spad, out_spad, c_acc, param_acc)


def with_irq(cmds):
    """``cmds`` with a completion interrupt requested by the last one."""
    return [*cmds[:-1], Command(cmds[-1].opcode, cmds[-1].fields, irq=True)]


def load_operands(plan):
    """DMA loads of A (K/dim planes of M rows) and B (N/dim tiles of K rows, zero K edge)."""
    p, dim, h = plan, plan.dim, plan.host
    loads = _tiled_dma(Opcode.DMA_LOAD, host_addr=h.a, host_row_stride=p.k, rows=p.m, cols=p.k,
                       elem_bytes=1, local_addr=p.a_spad, local_plane_stride=p.m,
                       local_row_stride=1, dim=dim)
    loads += _tiled_dma(Opcode.DMA_LOAD, host_addr=h.b, host_row_stride=p.n, rows=p.k, cols=p.n,
                        elem_bytes=1, local_addr=p.b_spad, local_plane_stride=p.b_tile_stride,
                        local_row_stride=1, dim=dim)
    if p.k_tiles * dim > p.k:   # B's K edge: the tile rows past K must be zero
        loads.append(Command(Opcode.DMA_LOAD, dict(
            host_addr=h.b, host_row_stride=0, host_plane_stride=0, row_bytes=0,
            rows=p.k_tiles * dim - p.k, planes=p.n_tiles, local_addr=p.b_spad + p.k,
            local_row_stride=1, local_plane_stride=p.b_tile_stride)))
    return loads


def load_epilogue_params(plan):
    """DMA loads of the bias, multiplier and shift rows (one triple of acc rows per n-tile)."""
    p, h, out = plan, plan.host, []
    for i, addr in enumerate((h.bias, h.mult, h.shift)):
        out += _tiled_dma(Opcode.DMA_LOAD, host_addr=addr, host_row_stride=0, rows=1, cols=p.n,
                          elem_bytes=4, local_addr=p.param_acc + i, local_plane_stride=3,
                          local_row_stride=1, dim=p.dim, acc=1)
    return out


def gemm_command(plan, accumulate=False):
    p = plan
    return Command(Opcode.GEMM, dict(
        a_addr=p.a_spad, b_addr=p.b_spad, c_addr=p.c_acc, m=p.m, k_tiles=p.k_tiles,
        n_tiles=p.n_tiles, a_kt_stride=p.m, b_nt_stride=p.b_tile_stride, c_nt_stride=p.m,
        accumulate=int(accumulate)))


def epilogue_commands(plan, *, zero_point, relu=True, bias=True):
    """One VECTOR command per n-tile: accumulator tile -> int8 output rows in the scratchpad."""
    p = plan
    return [Command(Opcode.VECTOR, {
        "src_addr": p.c_acc + nt * p.m, "dst_addr": p.out_spad + nt * p.m, "rows": p.m,
        "bias_addr": p.param_acc + 3 * nt, "mult_addr": p.param_acc + 3 * nt + 1,
        "shift_addr": p.param_acc + 3 * nt + 2, "zero_point": zero_point & 0xFF,
        "ops.bias": int(bias), "ops.relu": int(relu)}) for nt in range(p.n_tiles)]


def store_output(plan):
    p = plan
    return _tiled_dma(Opcode.DMA_STORE, host_addr=p.host.out, host_row_stride=p.n, rows=p.m,
                      cols=p.n, elem_bytes=1, local_addr=p.out_spad, local_plane_stride=p.m,
                      local_row_stride=1, dim=p.dim)


def lower_gemm_epilogue(plan, *, zero_point, relu=True, bias=True):
    """Commands computing ``Y = requant(A @ B (+ bias)) (ReLU)``, as [loads, gemm, epilogue, stores]."""
    phases = (load_operands(plan) + load_epilogue_params(plan), [gemm_command(plan)],
              epilogue_commands(plan, zero_point=zero_point, relu=relu, bias=bias),
              store_output(plan))
    return [with_irq(phase) for phase in phases]


def host_layout(m, k, n, base=0x1000, align=64):
    """Consecutive host placement of A, B, bias, mult, shift and Y (each ``align``-aligned)."""
    addrs, cur = [], base
    for size in (m * k, k * n, 4 * n, 4 * n, 4 * n, m * n):
        addrs.append(cur)
        cur = _align(cur + size, align)
    return HostLayout(*addrs), cur


def encode_phases(phases, tag_base=0):
    """Descriptor words of every command, phase by phase (tags number the commands)."""
    from spec.commands import encode
    out, tag = [], tag_base
    for phase in phases:
        out.append([encode(c.opcode, irq=c.irq, tag=tag + i, **c.fields)
                    for i, c in enumerate(phase)])
        tag += len(phase)
    return out


def store_accumulator(plan, host_addr):
    """DMA stores of the int32 C tiles from the accumulator to a row-major ``[M, N]`` int32 array."""
    p = plan
    return _tiled_dma(Opcode.DMA_STORE, host_addr=host_addr, host_row_stride=4 * p.n, rows=p.m,
                      cols=p.n, elem_bytes=4, local_addr=p.c_acc, local_plane_stride=p.m,
                      local_row_stride=1, dim=p.dim, acc=1)
