"""Compile errors name the node (or operation) and the reason."""


class CompileError(ValueError):
    def __init__(self, node, reason):
        super().__init__(f"{node}: {reason}")
        self.node, self.reason = node, reason
