"""The interface every execution engine (DMA channels, GEMM sequencer, vector unit) presents."""
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .descriptor import ErrorCode


class EngineSignature(wiring.Signature):
    """Engine side of a dispatcher↔engine link.

    cmd   : In(stream.Signature(cmd_layout)) — one command per ``valid & ready`` handshake; an
            engine accepts a new command only when idle.
    done  : Out(1) — one-cycle pulse when the accepted command retires (successfully or not).
    error : Out(ErrorCode) — valid with ``done``; ``OK`` on success.
    busy  : Out(1) — a command is executing.
    """

    def __init__(self, cmd_layout):
        self.cmd_layout = cmd_layout
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout)),
            "done": Out(1),
            "error": Out(ErrorCode),
            "busy": Out(1),
        })
