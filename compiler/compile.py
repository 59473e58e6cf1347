"""``compile_graph``: graph -> fused graph -> tiled IR -> command IR -> Program, verifying every
level, with the IR dumps and the cost model's per-command cycles."""
from dataclasses import dataclass, field

import numpy as np

from . import cost
from .graph import DTYPES, check_feeds, im2col
from .ir import CommandIR, dump_fused, verify_fused
from .errors import CompileError
from .passes import LAYOUTS, fuse, max_compute_queues, schedule, tile

__all__ = ["compile_graph", "CompiledModel"]


@dataclass
class CompiledModel:
    graph: object
    caps: object
    program: object              #: driver.program.Program
    cycles: list                 #: predicted cycles per command (aligned with program.commands)
    fused: list
    tiled: object
    dumps: dict = field(default_factory=dict)   #: "graph", "fused", "tiled", "commands" -> MLIR text

    def pack_inputs(self, feeds):
        """``{graph input name: array}`` -> ``{program buffer name: bytes}`` (applies the im2col host
        preprocessing for conv inputs). The feeds are checked like the interpreter's
        (:func:`compiler.graph.check_feeds`: exact names, dtypes and shapes, nothing converted;
        :class:`compiler.graph.FeedError` otherwise)."""
        feeds = check_feeds(self.graph, feeds)
        out = {}
        for t in self.graph.inputs:
            if t.name in self.program.buffers:
                out[t.name] = np.ascontiguousarray(feeds[t.name]).tobytes()
        for g in self.fused:
            spec = getattr(getattr(g, "a", None), "im2col", None)
            if spec is not None:
                kh, kw = spec["kernel"]
                x = feeds[spec["source"].name]
                out[g.a.name] = im2col(x, kh, kw, spec["stride"], spec["padding"],
                                       spec["source"].zero_point).tobytes()
        return out

    def unpack_outputs(self, read):
        """``read(buffer name, nbytes) -> bytes`` -> ``{graph output name: array}``."""
        return {t.name: np.frombuffer(read(t.name, t.nbytes), DTYPES[t.dtype]).reshape(t.shape)
                for t in self.graph.outputs}

    def report(self):
        return cost.summary(self.program, self.cycles)


def compile_graph(graph, caps, name=None, queues=None, layout=None, bias_in_c=None, forward=True,
                  compute_queues=None):
    """Compile ``graph`` for a chip with capabilities ``caps``; raises CompileError naming the node.

    ``layout`` (a ``passes.LAYOUTS`` name), ``bias_in_c`` (see ``passes.schedule``) and
    ``compute_queues`` (1 or 2, see ``passes.tile``) default to trying every combination (each
    also with and without the first tile's ramp of short k-steps, the split last tile and the
    tiling that counts the pipeline's fill and drain, ``passes.tile``'s ``ends``) and
    keeping the program the cost model's simulation (``cost.simulate``) predicts fastest;
    ``forward=False`` turns off the on-chip forwarding of a layer's output to the next layer's A
    (see ``passes.schedule``)."""
    name = name or graph.name
    graph.verify()
    dumps = {"graph": graph.dump()}
    fused = fuse(graph)
    consts = [n.output for n in graph.nodes if n.op == "const"]
    verify_fused(fused, graph.inputs, consts)
    dumps["fused"] = dump_fused(name, fused, graph.outputs)
    best, error = None, None
    shapes = [(lay, ramp, taper, nq, ends) for lay in ([layout] if layout else list(LAYOUTS))
              for ramp in (True, False) for taper in (True, False)
              for nq in ([compute_queues] if compute_queues else {max_compute_queues(caps), 1})
              for ends in (False, True)]
    seen, tilings = set(), {}
    for lay, ramp, taper, nq, ends in shapes:
        try:
            tiled = tile(fused, caps, lay, ramp=ramp, taper=taper, queues=nq, cache=tilings,
                         ends=ends).verify()
        except CompileError as e:
            error = error or e
            continue
        if (lay, tiled.shape()) in seen:       # e.g. no ramp possible, a single-tile last GEMM
            continue
        seen.add((lay, tiled.shape()))
        for bic in ([bias_in_c] if bias_in_c is not None else ["auto", False]):
            program = schedule(tiled, name, graph.inputs, graph.outputs, bias_in_c=bic,
                               forward=forward)
            cycles = cost.program_cycles(program, caps)
            if best is not None and cost.lower_bound(program, cycles) >= best[0]:
                continue            # its simulated run cannot be shorter than this bound
            t = cost.simulate(program.commands, cycles)
            if best is None or t < best[0]:
                best = (t, tiled, program, cycles)
    if best is None:
        raise error
    _, tiled, program, cycles = best
    dumps["tiled"] = tiled.dump(name)
    cir = CommandIR(caps, program, queues or caps.queues or 4).verify()
    dumps["commands"] = cir.dump()
    return CompiledModel(graph, caps, program, cycles, fused, tiled, dumps)
