"""Round-robin choice among requesters, shared by the AXI arbiter and the queue controller."""
from amaranth import Cat, Signal


def round_robin(m, valids, last, name):
    """Comb ``(any, sel)``: ``sel`` is the first index with ``valids[i]`` after ``last``, wrapping
    (so ``last`` itself has the lowest priority); ``any`` is 1 when some valid is set."""
    n = len(valids)
    sel = Signal(range(max(2, n)), name=f"{name}_sel")
    any_ = Signal(name=f"{name}_any")
    m.d.comb += any_.eq(Cat(*valids).any())
    with m.Switch(last):
        for k in range(n):
            with m.Case(k):
                # lowest priority first: the last assignment wins
                for j in reversed(range(1, n + 1)):
                    i = (k + j) % n
                    with m.If(valids[i]):
                        m.d.comb += sel.eq(i)
    return any_, sel
