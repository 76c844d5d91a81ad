"""Decompose any ``nn.Module`` into measurable blocks: the unit of a latency look-up table.

nn-Meter (Zhang et al., MobiSys 2021) predicts a model's latency from its fused kernels; Once-for-All's latency
table (Cai et al., ICLR 2020) holds whole MBConv blocks at their input resolution. Here blocks are chosen generically
from the module tree, so new block types need no code. Walking down from the root, a module is a block when it is an
instance of one of ``block_types``, or when its subtree is at most ``max_height`` levels deep (0: a layer such as
``Conv2d``; 1: e.g. Conv-BN-ReLU; 2: e.g. an inverted residual of such triples with squeeze-excite; 3: e.g. a ResNet
block whose body is a ``Sequential`` of triples) — except that a ``ModuleList``/``ModuleDict`` is never a block and a
plain ``Sequential`` only when it is a chain of layers (height 1): a ``Sequential`` of blocks adds no code of its own,
so cutting it loses nothing, while a custom module's own code (a residual add) stays inside it. A module that is not
a block is replaced by its children. Every call of a block in one forward pass is one :class:`BlockCall`, with the
input shape it saw; a block called with anything but one tensor is replaced by its children. What runs outside
blocks (e.g. a head's reshapes and concatenations, an input resize) is the *glue*: it is not measured alone but
enters the calibration of :class:`~lnas.hardware.lut.LutLatencyPredictor` through :func:`glue_key`, which names what
the glue's cost can depend on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

_CONTAINERS = (nn.ModuleList, nn.ModuleDict)
_CONFIG_TYPES = (bool, int, float, str, tuple, list)


@dataclass(frozen=True)
class BlockCall:
    """One call of a block: its qualified name in the model, the module, its input shape (no batch axis) and table key."""

    name: str
    module: nn.Module = field(compare=False, repr=False)
    input_shape: tuple[int, ...]
    key: str


def _plain_attributes(module: nn.Module) -> list:
    return sorted((k, v) for k, v in vars(module).items() if not k.startswith("_") and k != "training" and isinstance(v, _CONFIG_TYPES))


def configuration(module: nn.Module) -> str:
    """What fixes a module's cost but not its weights: its ``repr`` (torch layers print their hyper-parameters) and the
    plain attributes of every module of it that is not a ``torch.nn`` layer (e.g. a block's residual flag)."""
    attrs = [(name, type(sub).__qualname__, _plain_attributes(sub)) for name, sub in module.named_modules()
             if not type(sub).__module__.startswith("torch.nn")]
    return f"{type(module).__module__}.{repr(module)}{attrs}"


def block_key(module: nn.Module, input_shape: Sequence[int], config: str | None = None) -> str:
    """Stable key (the same in every process) of ``module``'s configuration (``config`` if already known) at ``input_shape``."""
    return hashlib.sha1(f"{config or configuration(module)}@{tuple(input_shape)}".encode()).hexdigest()[:20]


def glue_key(model: nn.Module, blocks: Sequence[BlockCall], input_shape: Sequence[int]) -> str:
    """Key of the code between blocks: the input shape and the classes and plain attributes of the modules outside
    blocks (e.g. a detector's input resolution). Candidates of one space mostly share a few keys."""
    inside = {b.module for b in blocks}

    def outside(module: nn.Module, name: str) -> list:
        if module in inside:
            return []
        own = [(name, type(module).__qualname__, _plain_attributes(module))]
        return own + [part for child_name, child in module.named_children() for part in outside(child, f"{name}.{child_name}")]

    text = f"{outside(model, '')}@{tuple(input_shape)}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def _heights(model: nn.Module) -> dict[nn.Module, int]:
    heights: dict[nn.Module, int] = {}

    def height(module: nn.Module) -> int:
        if module not in heights:
            heights[module] = 1 + max((height(child) for child in module.children()), default=-1)
        return heights[module]

    height(model)
    return heights


def select_blocks(model: nn.Module, max_height: int = 3, block_types: Sequence[type] = (),
                  split: frozenset[nn.Module] = frozenset()) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the blocks of ``model`` (see the module docstring); modules in ``split`` are never blocks."""
    heights, types = _heights(model), tuple(block_types)

    def walk(name: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
        limit = min(max_height, 1) if isinstance(module, nn.Sequential) else max_height
        is_block = isinstance(module, types) or (not isinstance(module, _CONTAINERS) and heights[module] <= limit)
        if is_block and module not in split:
            return [(name, module)]
        return [pair for child_name, child in module.named_children() for pair in walk(f"{name}.{child_name}" if name else child_name, child)]

    return walk("", model)


def _trace(model: nn.Module, blocks: list[tuple[str, nn.Module]], input_shape: Sequence[int],
           output_shapes: dict[str, tuple[torch.Size, torch.dtype]]) -> tuple[list[BlockCall], set[nn.Module]]:
    """Every single-tensor call of ``blocks`` in one forward pass, and the blocks called otherwise.

    A block whose key is in ``output_shapes`` is not run: it returns an uninitialised tensor of the recorded output shape, so only the
    code between blocks runs (a block's output shape is taken to depend only on its configuration and input shape).
    """
    calls: list[BlockCall] = []
    unmeasurable: set[nn.Module] = set()

    def replace_forward(name: str, module: nn.Module) -> None:
        forward, config = module.forward, configuration(module)

        def run(*args, **kwargs):
            if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
                unmeasurable.add(module)
                return forward(*args, **kwargs)
            shape = tuple(args[0].shape[1:])
            key = block_key(module, shape, config)
            calls.append(BlockCall(name, module, shape, key))
            if key in output_shapes:
                size, dtype = output_shapes[key]
                return args[0].new_empty(size, dtype=dtype)
            out = forward(args[0])
            if isinstance(out, torch.Tensor):
                output_shapes[key] = (out.shape, out.dtype)
            return out

        module.forward = run

    try:
        for name, module in blocks:
            replace_forward(name, module)
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=next(model.parameters(), torch.zeros(())).device))
    finally:
        for _, module in blocks:
            module.__dict__.pop("forward", None)
    return calls, unmeasurable


def decompose(model: nn.Module, input_shape: Sequence[int], max_height: int = 3, block_types: Sequence[type] = (),
              output_shapes: dict[str, tuple[torch.Size, torch.dtype]] | None = None) -> list[BlockCall]:
    """The block calls of one forward pass of ``model`` (eval mode, batch 1) on an input of shape ``(1, *input_shape)``.

    ``output_shapes`` (block key -> output shape), kept between calls, lets blocks seen before be skipped: a model
    whose blocks are all known is decomposed without running any of them.
    """
    output_shapes = {} if output_shapes is None else output_shapes
    split: set[nn.Module] = set()
    was_training = model.training
    if was_training:
        model.eval()
    try:
        while True:
            calls, unmeasurable = _trace(model, select_blocks(model, max_height, block_types, frozenset(split)), input_shape, output_shapes)
            splittable = {m for m in unmeasurable if next(m.children(), None) is not None} - split
            if not splittable:
                return [call for call in calls if call.module not in unmeasurable]
            split |= splittable
    finally:
        if was_training:
            model.train()
