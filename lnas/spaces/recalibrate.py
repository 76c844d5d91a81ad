"""BatchNorm recalibration of an extracted subnet (Once-for-All, Cai et al., ICLR 2020, §3.3).

A subnet extracted from a supernet inherits running statistics accumulated over many other subnets; re-estimating
them on a few batches restores its eval-mode accuracy without any training. The work is done by
``torch.optim.swa_utils.update_bn`` (reset, cumulative average over the batches, momenta and mode restored).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.swa_utils import update_bn


def recalibrate_batchnorm(model: nn.Module, batches: Iterable) -> nn.Module:
    """Recompute every BatchNorm's running mean and variance of ``model`` over ``batches``; returns ``model``.

    ``batches`` yields input tensors or ``(inputs, ...)`` tuples (a DataLoader works). Parameters are not changed.
    """
    device = next(model.parameters()).device
    with torch.no_grad():
        update_bn(batches, model, device=device)
    return model
