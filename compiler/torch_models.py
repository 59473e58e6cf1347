"""Demo models written in PyTorch, exported with ``torch.export`` and brought in by
:mod:`compiler.torch_import` (needs the ``torch`` extra; ``compiler.models`` imports this module
only when such a model is asked for).

``build(name, seed) -> (ImportedModel, float inputs, torch module)``; ``TORCH_MODELS`` lists names.
"""
import numpy as np
import torch
from torch import nn

from .models import TORCH_MODELS
from .torch_import import import_exported

__all__ = ["TORCH_MODELS", "ResidualMLP", "ConvNet", "build"]

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


_SPECS = {"torch_mlp": (ResidualMLP, (16, 128)), "torch_conv": (ConvNet, (1, 8, 12, 12))}


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
