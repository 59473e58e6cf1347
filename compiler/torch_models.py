"""Demo models written in PyTorch, exported with ``torch.export`` and brought in by
:mod:`compiler.torch_import` (needs the ``torch`` extra; ``compiler.models`` imports this module
only when such a model is asked for).

``build(name, seed) -> (ImportedModel, float inputs, torch module)``; ``TORCH_MODELS`` lists names:

* ``torch_mlp``, ``torch_conv``: :class:`ResidualMLP` (batch 16) and :class:`ConvNet` (1x8x12x12).
* ``encoder``: :class:`EncoderBlock`, a pre-norm transformer encoder block (LayerNorm, 4-head
  non-causal attention, GELU FFN 4*d) at d_model 64, sequence 64, input ``(1, 64, 64)``.
* ``decoder_block``: :class:`DecoderBlock`, a LLaMA-style decoder block (RMSNorm, causal 4-head
  attention, SwiGLU FFN) at d_model 64, sequence 64.
* ``encoder_d{D}_s{S}``, ``decoder_block_d{D}_s{S}`` for d_model D and sequence S in {64, 128}
  other than 64/64 (``encoder_d64_s128``, ``encoder_d128_s64``, ``encoder_d128_s128`` and the
  same for ``decoder_block``): the same blocks at other sizes, batch 1, input ``(1, S, D)``.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .models import TORCH_MODELS
from .torch_import import import_exported

__all__ = ["TORCH_MODELS", "ResidualMLP", "ConvNet", "SelfAttention", "EncoderBlock",
           "DecoderBlock", "swiglu_hidden", "CharLMBody", "CharLM", "build"]

CALIBRATION_BATCHES = 8


class ResidualMLP(nn.Module):
    """x -> fc1+ReLU -> fc2+ReLU (+ skip from fc1) -> fc3 logits: linear, relu and add."""

    def __init__(self, d_in=128, hidden=256, d_out=10):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, hidden), nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, d_out)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc3(torch.relu(self.fc2(h)) + h)


class ConvNet(nn.Module):
    """NCHW image -> 3x3 conv+ReLU -> 1x1 conv head (a per-pixel linear on the device)."""

    def __init__(self, c=8, oc=16, head=8):
        super().__init__()
        self.conv = nn.Conv2d(c, oc, 3, padding=1)
        self.head = nn.Conv2d(oc, head, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)))


def _tap(module, point, x):
    """``x`` itself, unless ``module.act_quant`` is set: then ``module.act_quant(module, point,
    x)``. The points are the activations the importer quantizes per tensor (a norm's, a linear's,
    the SiLU's, the SwiGLU product's, the merged attention output, an add's result); with
    ``act_quant`` set, :class:`SelfAttention` also calls ``act_quant.attention(module, q, k, v,
    causal)`` instead of ``F.scaled_dot_product_attention``. Training-time only (the
    quantization-aware training of tools/train_lm.py: observers and fake quantizers): it is
    ``None`` (a class attribute) for export and inference, where the taps are plain Python and
    add no op to the exported graph, and it is neither a parameter nor a buffer."""
    return x if module.act_quant is None else module.act_quant(module, point, x)


class SelfAttention(nn.Module):
    """Multi-head self-attention, the standard way: separate q/k/v/o projections, the head split
    ``view(B, S, H, D/H).transpose(1, 2)``, ``F.scaled_dot_product_attention``, the merge
    ``transpose(1, 2).reshape(B, S, D)``, the output projection."""

    act_quant = None        #: see :func:`_tap`

    def __init__(self, d_model, heads=4, causal=False, bias=True):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d_model, d_model, bias=bias)
                                              for _ in range(4))

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = (_tap(self, p, w(x)).view(b, s, self.heads, d // self.heads).transpose(1, 2)
                   for p, w in (("q", self.wq), ("k", self.wk), ("v", self.wv)))
        if self.act_quant is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            o = self.act_quant.attention(self, q, k, v, self.causal)
        return _tap(self, "out", self.wo(_tap(self, "merged", o.transpose(1, 2).reshape(b, s, d))))


def _perturb_norm(norm):
    """gamma (and beta) near LayerNorm's/RMSNorm's 1 (and 0), from torch's seeded generator, so
    that they matter."""
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(norm.weight.shape))
        if getattr(norm, "bias", None) is not None:
            norm.bias.copy_(0.1 * torch.randn(norm.bias.shape))


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block: ``x + attn(LayerNorm(x))``, then
    ``x + FFN(LayerNorm(x))`` with ``FFN = Linear(d, 4d) -> GELU -> Linear(4d, d)``; non-causal
    attention."""

    def __init__(self, d_model=64, heads=4, ffn_mult=4):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads, causal=False)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_mult * d_model), nn.GELU(),
                                 nn.Linear(ffn_mult * d_model, d_model))
        for norm in (self.norm1, self.norm2):
            _perturb_norm(norm)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def swiglu_hidden(d_model, multiple_of=16):
    """LLaMA's SwiGLU width: 2/3 of 4*d_model, rounded up to a multiple of ``multiple_of``."""
    hidden = int(2 * 4 * d_model / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class DecoderBlock(nn.Module):
    """LLaMA-style decoder block: ``x + attn(RMSNorm(x))`` (causal, no biases), then ``x +
    w2(silu(w1 h) * w3 h)`` with ``h = RMSNorm(x)`` (SwiGLU, hidden :func:`swiglu_hidden`)."""

    def __init__(self, d_model=64, heads=4):
        super().__init__()
        hidden = swiglu_hidden(d_model)
        self.norm1, self.norm2 = nn.RMSNorm(d_model), nn.RMSNorm(d_model)
        self.attn = SelfAttention(d_model, heads, causal=True, bias=False)
        self.w1 = nn.Linear(d_model, hidden, bias=False)
        self.w3 = nn.Linear(d_model, hidden, bias=False)
        self.w2 = nn.Linear(hidden, d_model, bias=False)
        for norm in (self.norm1, self.norm2):
            _perturb_norm(norm)

    act_quant = None        #: see :func:`_tap`

    def forward(self, x):
        x = _tap(self, "add1", x + self.attn(_tap(self, "norm1", self.norm1(x))))
        h = _tap(self, "norm2", self.norm2(x))
        g = _tap(self, "silu", F.silu(_tap(self, "w1", self.w1(h))))
        m = _tap(self, "mul", g * _tap(self, "w3", self.w3(h)))
        return _tap(self, "add2", x + _tap(self, "w2", self.w2(m)))


class CharLMBody(nn.Module):
    """The part of :class:`CharLM` the importer takes: summed embedding rows ``[B, S, d_model]``
    -> ``layers`` :class:`DecoderBlock` -> final RMSNorm -> LM head linear (no bias) -> logits
    ``[B, S, vocab]``."""

    def __init__(self, vocab, d_model=128, layers=2, heads=4):
        super().__init__()
        self.blocks = nn.ModuleList(DecoderBlock(d_model, heads) for _ in range(layers))
        self.norm = nn.RMSNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    act_quant = None        #: see :func:`_tap`

    def forward(self, x):
        x = _tap(self, "input", x)
        for block in self.blocks:
            x = block(x)
        return _tap(self, "logits", self.head(_tap(self, "norm", self.norm(x))))


class CharLM(nn.Module):
    """Decoder-only character language model (compiler/llm_model.py, docs/llm.md): token and
    LEARNED position embeddings (``nn.Embedding`` tables, looked up outside the imported graph:
    on the chip each row is a DMA whose address is a launch parameter), added, then
    :class:`CharLMBody`. ``forward(idx [B, S] int64) -> logits [B, S, vocab]``, S <= context."""

    def __init__(self, vocab, d_model=128, layers=2, heads=4, context=256):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.body = CharLMBody(vocab, d_model, layers, heads)
        #: sqrt(d_model), as in "Attention is all you need": the embeddings then keep a range
        #: close to the residual stream's, whose one int8 scale they share after the import
        #: (at GPT-2's 0.02 without it, they were quantized to a few codes and the int8 model
        #: lost the text)
        self.embed_scale = math.sqrt(d_model)
        # GPT-2's initialization: N(0, 0.02) matrices and tables, the projections into the
        # residual stream (attention out, SwiGLU down) at 0.02 / sqrt(2 * layers), norms at 1
        for name, p in self.named_parameters():
            if p.dim() == 2:
                last = name.endswith(("attn.wo.weight", "w2.weight"))
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * layers) if last else 0.02)
            else:
                nn.init.ones_(p)

    def tables(self):
        """The float token and position tables as added (times :attr:`embed_scale`)."""
        return self.tok.weight * self.embed_scale, self.pos.weight * self.embed_scale

    def embed(self, idx):
        return (self.tok(idx) + self.pos(torch.arange(idx.shape[-1], device=idx.device))) \
            * self.embed_scale

    def forward(self, idx):
        return self.body(self.embed(idx))


def _block_specs():
    specs = {}
    for cls, base in ((EncoderBlock, "encoder"), (DecoderBlock, "decoder_block")):
        for d in (64, 128):
            for s in (64, 128):
                name = base if (d, s) == (64, 64) else f"{base}_d{d}_s{s}"
                specs[name] = (lambda cls=cls, d=d: cls(d_model=d), (1, s, d))
    return specs


_SPECS = {"torch_mlp": (ResidualMLP, (16, 128)), "torch_conv": (ConvNet, (1, 8, 12, 12)),
          **_block_specs()}


def build(name, seed=0):
    """Seeded weights and inputs, exported, calibrated on CALIBRATION_BATCHES random batches plus
    the input itself, imported."""
    if name not in _SPECS:
        raise ValueError(f"unknown torch model {name!r} (known: {', '.join(TORCH_MODELS)})")
    cls, shape = _SPECS[name]
    torch.manual_seed(seed)
    model = cls().eval()
    x = torch.randn(*shape)
    ep = torch.export.export(model, (x,))
    calibration = [(torch.randn(*shape),) for _ in range(CALIBRATION_BATCHES)] + [(x,)]
    imported = import_exported(ep, calibration, name=name)
    return imported, (np.asarray(x),), model
