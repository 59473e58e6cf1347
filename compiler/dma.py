"""Command-building primitives shared by every lowering: commands and tiled DMA transfers."""
from dataclasses import dataclass

from spec.descriptors import Opcode

__all__ = ["Command", "ceil_div", "align", "tiled_dma"]


def ceil_div(a, b):
    return -(-a // b)


def align(x, a):
    return ceil_div(x, a) * a


@dataclass(frozen=True)
class Command:
    opcode: Opcode
    fields: dict
    irq: bool = False


def tiled_dma(opcode, *, host_addr, host_row_stride, rows, cols, elem_bytes, local_addr,
              local_plane_stride, local_row_stride, dim, acc=0):
    """DMA commands moving a rows×cols matrix as column tiles of ``dim`` elements (one plane each).

    Full tiles go in one command (``planes`` = number of full tiles), a partial edge tile in a
    second one (the load zero-pads the rest of its rows). ``host_addr`` may be an int or any object
    supporting ``+ int`` (the compiler passes a relocatable address).
    """
    full, edge = divmod(cols, dim)
    cmds = []
    common = dict(host_row_stride=host_row_stride, rows=rows, local_row_stride=local_row_stride,
                  host_plane_stride=dim * elem_bytes, local_plane_stride=local_plane_stride, acc=acc)
    if full:
        cmds.append(Command(opcode, dict(common, host_addr=host_addr, local_addr=local_addr,
                                         row_bytes=dim * elem_bytes, planes=full)))
    if edge:
        cmds.append(Command(opcode, dict(common, host_addr=host_addr + full * dim * elem_bytes,
                                         local_addr=local_addr + full * local_plane_stride,
                                         row_bytes=edge * elem_bytes, planes=1)))
    return cmds
