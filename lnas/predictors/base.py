"""The zero-shot proxy interface (torchmetrics style: class attributes other code reads, math in plain functions).

Proxies that can share forward/backward passes name a *shared pass* (:meth:`Proxy.shared_pass`): a function that
computes several proxies of one model at once. :func:`score_proxies` groups proxies by it, so an ensemble runs
each pass once.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lnas.predictors.module_copy import copy_module

Inputs = torch.Tensor | Sequence[int]
"""A batch of inputs, or (for data-free proxies) only its shape ``(N, C, H, W)``."""

SharedPass = Callable[[Sequence["Proxy"], nn.Module, torch.Tensor, "torch.Tensor | None"], dict[str, float]]


def flatten_outputs(output: torch.Tensor | Sequence) -> list[torch.Tensor]:
    """All tensors of a model output (a tensor, or nested lists/tuples of them, e.g. multi-level features)."""
    if isinstance(output, torch.Tensor):
        return [output]
    return [t for item in output for t in flatten_outputs(item)]


def input_shape(inputs: Inputs) -> tuple[int, ...]:
    """The batch shape ``(N, ...)`` of ``inputs`` (a tensor or a shape)."""
    return tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else tuple(int(d) for d in inputs)


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def require_tensor(inputs: Inputs, proxy: str) -> torch.Tensor:
    """``inputs`` as a tensor; data-dependent proxies cannot work from a shape alone."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"proxy {proxy!r} needs a batch of real inputs (a tensor), got the shape {tuple(inputs)}")
    return inputs


@dataclass(frozen=True)
class Supervision:
    """The targets of a batch and the loss label-using proxies differentiate, ``loss(outputs, targets) -> scalar``.

    A task gives its own (e.g. detection's FCOS loss over per-image boxes); plain class-index targets get cross-entropy
    on logits (:func:`supervision_of`). ``supervision[a:b]`` holds the targets of samples ``a..b-1``.
    """

    targets: Any
    loss: Callable[[Any, Any], torch.Tensor]

    def __getitem__(self, index: slice) -> Supervision:
        return Supervision(self.targets[index], self.loss)

    def __len__(self) -> int:
        return len(self.targets)

    def loss_of(self, outputs: Any) -> torch.Tensor:
        return self.loss(outputs, self.targets)


def supervision_of(targets: object | None, inputs: torch.Tensor, proxy: str) -> Supervision:
    """``targets`` as a :class:`Supervision` for ``inputs``: given as one, or class-index targets (cross-entropy on logits)."""
    if isinstance(targets, Supervision):
        if len(targets) < len(inputs):
            raise TypeError(f"proxy {proxy!r} got targets for {len(targets)} samples and {len(inputs)} inputs")
        return targets
    if not isinstance(targets, torch.Tensor) or targets.dtype not in (torch.int64, torch.int32) or targets.shape[:1] != inputs.shape[:1]:
        got = f"a {targets.dtype} tensor of shape {tuple(targets.shape)}" if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise TypeError(f"proxy {proxy!r} needs class-index targets (an int64 tensor of shape ({inputs.shape[0]},)) or a Supervision "
                        f"with the task's loss; got {got}")
    return Supervision(targets.long(), lambda outputs, labels: F.cross_entropy(logits_of(outputs, proxy), labels))


def logits_of(output: object, proxy: str) -> torch.Tensor:
    """The logits of a classification model; a clear error for other outputs (e.g. detection tuples)."""
    if isinstance(output, torch.Tensor) and output.dim() == 2:
        return output
    shapes = [tuple(t.shape) for t in flatten_outputs(output)] if isinstance(output, torch.Tensor | list | tuple) else type(output).__name__
    raise TypeError(f"proxy {proxy!r} needs a classification model returning logits of shape (N, classes); this model returns {shapes}")


def weight_layers(model: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    """The Conv2d and Linear layers, in module order (the layers the zero-cost proxies score)."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def uses_batch_statistics(norm: nn.modules.batchnorm._BatchNorm) -> bool:
    """Whether a BatchNorm layer normalises with the statistics of the batch (training mode, or no running statistics)."""
    return norm.training or norm.running_mean is None


def per_channel(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-channel ``values`` shaped to broadcast over ``like`` (N, C, ...), in its dtype."""
    return values.to(like.dtype).view(1, -1, *([1] * (like.dim() - 2)))


def _zero_constant_channels(module: nn.modules.batchnorm._BatchNorm, args: tuple) -> tuple | None:
    """Forward pre-hook: the input with every channel that is constant over the batch shifted to exactly zero; None
    (input unchanged) when no channel is constant or the layer normalises with running statistics.

    Candidates are the channels constant over the first two samples (a cheap test); only those are checked on the
    whole batch."""
    (x,) = args
    if not uses_batch_statistics(module) or x.dim() < 2:
        return None
    with torch.no_grad():
        flat = x.flatten(2) if x.dim() > 2 else x.unsqueeze(2)
        first = flat[:1, :, :1]
        candidates = (flat[:2] == first).all(dim=2).all(dim=0).nonzero().squeeze(1)
        if len(candidates) == 0:
            return None
        values = first[0, candidates, 0]
        constant = (flat[:, candidates] == values.view(1, -1, 1)).all(dim=2).all(dim=0)
        if not bool(constant.any()):
            return None
        shift = x.new_zeros(x.shape[1])
        shift[candidates[constant]] = values[constant]
    return (x - per_channel(shift, x),)


def exact_batch_statistics(net: nn.Module) -> nn.Module:
    """Make ``net``'s batch-statistics BatchNorm layers exact for channels that are constant over the batch.

    A channel is constant when its input is (e.g. the bias of a convolution applied to a zero tensor, as in a cell
    whose input is the ``none`` op's zeros). In exact arithmetic BatchNorm maps it to 0 and a following ReLU passes no
    gradient. A float32 mean on the CPU is off by a rounding error, so the layer outputs noise of about 1e-5, the
    ReLU passes half of it and every such layer multiplies the gradient by ``1/sqrt(eps)`` (316): fisher then rates
    such untrainable cells among the best (up to 1e9 instead of about 1e-5). Shifting each constant channel by its
    value makes it exactly zero; other channels are passed on untouched. Batch normalisation is invariant to
    per-channel shifts, so the network computes the same function, with the same derivatives of every order.
    """
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(_zero_constant_channels)
    return net


def scoring_copy(model: nn.Module) -> nn.Module:
    """A deep copy in training mode with fresh gradients (:func:`copy_module` copies no ``.grad``) and exact batch
    statistics, so that scoring never touches ``model`` and a constant channel scores as exact arithmetic says
    (:func:`exact_batch_statistics`)."""
    net = exact_batch_statistics(copy_module(model).train())
    for parameter in net.parameters():
        parameter.requires_grad_(True)
    return net


def checked_batch_size(proxy: str, batch_size: int, minimum: int = 1) -> int:
    """``batch_size`` if it is at least ``minimum``; otherwise a ValueError naming ``proxy``'s setting."""
    if batch_size < minimum:
        raise ValueError(f"{proxy}.batch_size must be >= {minimum}, got {batch_size}")
    return batch_size


def first(inputs: torch.Tensor, count: int) -> torch.Tensor:
    """The first ``count`` samples (all of them when the batch is smaller)."""
    return inputs[:count]


class Proxy(ABC):
    """A training-free score of a network's accuracy potential.

    Class attributes: ``higher_is_better`` (direction of the score), ``needs_data`` (uses real inputs rather than
    only their shape), ``needs_labels`` (uses targets). ``score`` never changes the model it is given (weights,
    mode, gradients, BatchNorm statistics); it runs on the model's device.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    needs_data: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False

    @abstractmethod
    def score(self, model: nn.Module, inputs: Inputs, targets: object | None = None) -> float:
        """Score ``model``; ``inputs`` is a batch (data-free proxies accept its shape alone)."""

    def shared_pass(self) -> tuple[SharedPass, Hashable] | None:
        """The pass this proxy shares with others, as ``(function, settings that must match)``; None if it shares none."""
        return None

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({settings})"


class SharedPassProxy(Proxy):
    """A proxy computed by its shared pass alone: scoring it by itself runs that pass for it alone."""

    @abstractmethod
    def shared_pass(self) -> tuple[SharedPass, Hashable]:
        """The pass that computes this proxy, as ``(function, settings that must match)``."""

    def score(self, model: nn.Module, inputs: Inputs, targets: object | None = None) -> float:
        function, _ = self.shared_pass()
        return function([self], model, inputs, targets)[self.name]


SCORING_ERRORS = (RuntimeError, ValueError, FloatingPointError, TypeError)
"""What a proxy raises when it cannot score a network (a failed numerical step, a model it cannot read)."""


def score_proxies(proxies: Sequence[Proxy], model: nn.Module, inputs: Inputs, targets: object | None = None,
                  on_error: str = "raise") -> dict[str, float]:
    """Every proxy's score of ``model``, running each shared pass once for all the proxies that use it.

    ``on_error="nan"``: a proxy (or shared pass) that fails gives NaN for its proxies, with a warning naming them and the
    error, and the others are still computed (an ensemble ranks a NaN member last).
    """
    if on_error not in ("raise", "nan"):
        raise ValueError(f"on_error must be 'raise' or 'nan', got {on_error!r}")
    groups: dict[Hashable, list[Proxy]] = {}
    scores: dict[str, float] = {}

    def attempt(members: Sequence[Proxy], compute: Callable[[], dict[str, float]]) -> None:
        try:
            scores.update(compute())
        except SCORING_ERRORS as error:
            if on_error == "raise":
                raise
            names = [p.name for p in members]
            warnings.warn(f"proxies {names} failed on {type(model).__name__} ({type(error).__name__}: {error}); they score NaN", stacklevel=3)
            scores.update(dict.fromkeys(names, math.nan))

    for proxy in proxies:
        shared = proxy.shared_pass()
        if shared is None:
            attempt([proxy], lambda proxy=proxy: {proxy.name: float(proxy.score(model, inputs, targets))})
        else:
            groups.setdefault(shared, []).append(proxy)
    for (function, _), members in groups.items():
        attempt(members, lambda function=function, members=members: function(members, model, inputs, targets))
    return {proxy.name: scores[proxy.name] for proxy in proxies}


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` (random numbers drawn where they are used; the numbers differ between device types)."""
    return torch.Generator(device=device).manual_seed(seed)


def gaussian(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Standard-normal numbers drawn with ``generator``, on its device."""
    return torch.randn(tuple(shape), generator=generator, device=generator.device)


def feature_modules(model: nn.Module) -> list[nn.Module]:
    """The stem and every block of a backbone, in order: the units whose outputs block-wise proxies read.

    A model may list them itself (``model.feature_modules()``, as :class:`~lnas.spaces.nb201.NB201Network` does);
    a task model with a ``backbone`` gives its backbone's;
    otherwise they are ``model.stem`` followed by the blocks in ``model.cells|blocks|stages|layers`` (nested
    ``Sequential``/``ModuleList`` containers are opened).
    """
    if callable(getattr(model, "feature_modules", None)):
        return list(model.feature_modules())
    if isinstance(getattr(model, "backbone", None), nn.Module):  # a task model (e.g. a detector): its backbone's blocks
        return feature_modules(model.backbone)

    def blocks(module: nn.Module) -> list[nn.Module]:
        if isinstance(module, nn.Sequential | nn.ModuleList):
            return [block for child in module for block in blocks(child)]
        return [module]

    found = [model.stem] if isinstance(getattr(model, "stem", None), nn.Module) else []
    for attribute in ("cells", "blocks", "stages", "layers"):
        if isinstance(getattr(model, attribute, None), nn.Module):
            found.extend(blocks(getattr(model, attribute)))
    if len(found) < 2:
        found = _stem_and_stage_blocks(list(model.children()), blocks)
    if len(found) < 2:
        raise TypeError(f"{type(model).__name__} exposes no blocks: define feature_modules() or a `stem` and `cells|blocks|stages|layers`")
    return found


def _stem_and_stage_blocks(children: list[nn.Module], blocks: Callable[[nn.Module], list[nn.Module]]) -> list[nn.Module]:
    """A network laid out as its children in order, e.g. a timm ``features_only`` network (conv1, bn1, act1, maxpool,
    layer1 … layer4): the last plain child before the first container is the stem, and every container's blocks follow."""
    containers = [i for i, child in enumerate(children) if isinstance(child, nn.Sequential | nn.ModuleList)]
    if not containers:
        return []
    stem = [children[containers[0] - 1]] if containers[0] > 0 else []
    return stem + [block for i in containers for block in blocks(children[i])]
