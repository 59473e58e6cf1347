"""Bring your own model to `make sim`:

    make sim MODEL=docs/examples/my_model.py:tiny_cnn
    make sim MODEL=docs/examples/my_model.py:torch_mlp      # a torch.nn.Module (the torch extra)

`make sim MODEL=path/to/file.py:function` imports the file, calls ``function(seed=SEED)`` (or
``function()`` when it takes no ``seed``) and runs what it returns through compiler -> driver ->
firmware -> RTL with the same report and bit-exact checks as the built-in models. The function
returns either

* ``(graph, feeds)``: a :class:`compiler.graph.Graph` and ``{input name: int8 NumPy array}`` of
  exactly each input's shape (docs/compiler.md, "Graph API"), or
* ``(module, example_inputs)``: a ``torch.nn.Module`` and a tensor or tuple of tensors; it is
  exported with ``torch.export``, calibrated on the inputs plus random batches of their shapes
  and imported by ``compiler/torch_import.py`` (docs/torch_import.md lists the supported ops).
"""
import numpy as np

from compiler.graph import Graph, im2col, interpret


def _scale(acc, in_scale, w_scale, codes=30):
    """An output scale mapping one standard deviation of the int32 accumulator to ``codes``."""
    return float(np.std(acc)) * in_scale * w_scale / codes


def tiny_cnn(seed=0):
    """NHWC 1x12x12x8 image -> 3x3 conv + ReLU (16 channels) -> global max-pool (``maxred``: the
    vector unit's row max-reduce) -> linear head to 10 logits. Outputs the pooled features and the
    logits."""
    rng = np.random.default_rng(seed)
    img = rng.integers(-128, 128, (1, 12, 12, 8), dtype=np.int8)
    feeds = {"img": img}
    g = Graph("tiny_cnn")
    x = g.input("img", img.shape, scale=0.02, zero_point=0)
    cw = rng.integers(-128, 128, (3, 3, 8, 16), dtype=np.int8)
    acc = im2col(img, 3, 3, 1, 1, 0).astype(np.int64) @ cw.reshape(-1, 16)
    y = g.conv2d(x, g.const("cw", cw, scale=0.01), None, scale=_scale(acc, 0.02, 0.01),
                 zero_point=-60, padding=1, relu=True, name="conv")
    pool = g.maxred(y, name="pool")                        # [1, 16]: max over the 144 pixels
    g.output(pool)
    pv = interpret(g, feeds)["pool"].astype(np.int64) - pool.zero_point
    hw = rng.integers(-128, 128, (16, 10), dtype=np.int8)
    head = g.linear(pool, g.const("hw", hw, scale=0.01), None,
                    scale=max(_scale(pv @ hw, float(pool.scale), 0.01), 1e-6), zero_point=0,
                    name="head")
    g.outputs = [pool, head]
    return g, feeds


def torch_mlp(seed=0):
    """A PyTorch MLP (linear + ReLU, linear) and an example batch of 8."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 12))
    return model, (torch.randn(8, 64),)
