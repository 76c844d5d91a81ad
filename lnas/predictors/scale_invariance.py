"""Which weight layers the loss is invariant to rescaling, found on the autograd graph of one forward pass.

A layer whose output feeds nothing but a BatchNorm on batch statistics (the usual Conv → BatchNorm) computes the
same loss for ``c * W`` as for ``W``, any ``c > 0``; a bias is a per-channel shift, which BatchNorm removes too.
Differentiating ``L(c W) = L(W)`` gives ``W · dL/dW = 0`` and, once more, ``H W = -dL/dW`` for the Hessian-vector
product along the layer's own weights (van Laarhoven, 2017, "L2 Regularization versus Batch and Weight
Normalization"; Arora et al., ICLR 2019, "Theoretical Analysis of Auto Rate-Tuning by Batch Normalization").
GraSP uses it to skip most of its double backward.

The identity is exact up to BatchNorm's ``eps`` (``BN(c x)`` has variance ``c²σ² + eps``): on NAS-Bench-201
networks the terms it gives differ from the double backward's by about 1e-4 relative, the size of float32 rounding
in the double backward itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lnas.predictors.base import uses_batch_statistics


class ScaleInvariantLayers:
    """Hooks that record, during one forward pass, which weight layers' outputs enter a batch-statistics BatchNorm.

    Only BatchNorm: its statistics are per channel, so it also removes a layer's per-channel bias (GroupNorm and
    LayerNorm do not). Use: create before the forward pass, call :meth:`find` with the loss, then :meth:`close`.
    """

    def __init__(self, net: nn.Module, layers: Sequence[nn.Module]) -> None:
        self._layer_outputs: dict[int, list[object]] = {}
        self._pending_inputs: dict[int, object] = {}
        self._norm_output_of_input: dict[object, list[object]] = {}
        self._handles = [layer.register_forward_hook(self._layer_hook(index)) for index, layer in enumerate(layers)]
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                self._handles.append(module.register_forward_pre_hook(self._on_norm_input, prepend=True))
                self._handles.append(module.register_forward_hook(self._on_norm_output))

    def _layer_hook(self, index: int):
        def on_output(layer: nn.Module, args: tuple, output: object) -> None:
            node = output.grad_fn if isinstance(output, torch.Tensor) else None
            self._layer_outputs.setdefault(index, []).append(node)
        return on_output

    def _on_norm_input(self, norm: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor) and args[0].grad_fn is not None and uses_batch_statistics(norm):
            self._pending_inputs[id(norm)] = args[0].grad_fn

    def _on_norm_output(self, norm: nn.Module, args: tuple, output: object) -> None:
        node = self._pending_inputs.pop(id(norm), None)
        if node is not None and isinstance(output, torch.Tensor):
            self._norm_output_of_input.setdefault(node, []).append(output.grad_fn)

    def find(self, loss: torch.Tensor) -> set[int]:
        """Indices of the layers each of whose outputs has, on the way to ``loss``, no use but a BatchNorm's input.

        A layer with an output also used elsewhere (a residual, a second head), changed in place before the
        BatchNorm, or not a tensor is left out: the identity would not hold for it.
        """
        if loss.grad_fn is None:
            return set()
        uses: dict[object, int] = {}
        stack, seen = [loss.grad_fn], {loss.grad_fn}
        while stack:
            node = stack.pop()
            for child, _ in node.next_functions:
                if child is None:
                    continue
                uses[child] = uses.get(child, 0) + 1
                if child not in seen:
                    seen.add(child)
                    stack.append(child)

        def only_normalised(node: object) -> bool:
            return uses.get(node, 0) == 1 and any(out in seen for out in self._norm_output_of_input.get(node, []))

        return {index for index, nodes in self._layer_outputs.items() if all(only_normalised(node) for node in nodes)}

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
