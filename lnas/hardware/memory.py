"""Peak activation memory of one inference, traced on CPU.

The memory bound of MCUNet (Lin et al., NeurIPS 2020) and of tinyML deployments is the largest set of activations
alive at once, not their sum. It is traced here with a ``TorchDispatchMode``: every tensor an operator returns is
counted from its creation until the last Python reference to a tensor on its storage goes away (views and in-place
results share their storage, so they are counted once); parameters and buffers are excluded and the input counts as
alive throughout (the caller owns it). Workspace that kernels allocate internally is not seen.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _LiveActivations(TorchDispatchMode):
    """Bytes of the storages that live tensors created under this mode hold, and their peak."""

    def __init__(self, excluded: set[int]) -> None:
        super().__init__()
        self.excluded = excluded
        self.refs: dict[int, list[int]] = {}  # storage address -> [bytes, live tensors on it]
        self.current = self.peak = 0

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        address = storage.data_ptr()
        if address in self.excluded or storage.nbytes() == 0:
            return
        entry = self.refs.setdefault(address, [storage.nbytes(), 0])
        if entry[1] == 0:
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(tensor, self._release, address)

    def _release(self, address: int) -> None:
        entry = self.refs[address]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.refs[address]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.track(leaf)
        return out


def peak_activation_bytes(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1) -> int:
    """Peak bytes of activations alive at once in one forward pass (eval mode, no grad, float32) at ``(batch_size, *input_shape)``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.zeros(())).device
    excluded = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    try:
        with torch.no_grad():
            inputs = torch.zeros((batch_size, *input_shape), device=device)
            tracker = _LiveActivations(excluded)
            tracker.track(inputs)
            with tracker:
                model(inputs)
    finally:
        model.train(was_training)
    return tracker.peak
