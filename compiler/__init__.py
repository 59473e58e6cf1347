"""Kaki compiler: model graph -> tiled, scheduled command stream (docs/compiler.md).

``compile_graph(graph, caps)`` takes a :class:`compiler.graph.Graph` and the chip's
:class:`spec.capabilities.Capabilities` and returns a :class:`compiler.compile.CompiledModel`
holding the :class:`driver.program.Program`, the cost model's cycles per command and the IR dumps.
"""
