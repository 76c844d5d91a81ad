"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020, "NAS-Bench-201: Extending the Scope of Reproducible Neural
Architecture Search"), built exactly as the benchmark defines its CIFAR networks (``TinyNetwork`` with ``InferCell``).

A cell is a DAG of 4 nodes; each of its 6 edges ``j -> i`` (j < i) carries one of 5 operations. One cell design is
repeated 15 times: 3 stages of 5 cells at 16/32/64 channels, with a residual reduction block between stages; a
3x3 conv + BN stem before, and BN-ReLU, global average pooling and a linear classifier after.

Arch labels: ``node{i}.edge{j}`` (the op on the edge from node ``j`` into node ``i``), e.g. ``node2.edge1``.
String encoding: the benchmark's own, e.g.
``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
import torch
from torch import nn

from lnas.spaces.arch import Arch, InvalidArchError, check_arch, choose
from lnas.spaces.base import FeatureInfo, SearchSpace, Supernet
from lnas.spaces.parts import Part, tensor_input

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES = 4
LABELS = tuple(f"node{i}.edge{j}" for i in range(1, NODES) for j in range(i))
STRING_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


class ReLUConvBN(nn.Sequential):
    """ReLU → Conv → BatchNorm, the benchmark's convolution op (no conv bias, affine BatchNorm).

    ``conv_bias=True`` builds it as SamsungLabs/zero-cost-nas does inside the cells (``affine=False``: a conv bias and
    a BatchNorm without scale and shift); in training mode the BatchNorm removes the bias, so the outputs are the same.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int = 1, conv_bias: bool = False) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(in_chs, out_chs, kernel, stride, padding=kernel // 2, bias=conv_bias),
                         nn.BatchNorm2d(out_chs, affine=not conv_bias))


class Zero(nn.Module):
    """The ``none`` op: a zero tensor of the input's shape (kept in the graph, as in the benchmark)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(name: str, channels: int, conv_bias: bool = False) -> nn.Module:
    """One edge operation at stride 1 with ``channels`` in and out (``conv_bias``: see :class:`ReLUConvBN`)."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, conv_bias=conv_bias)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, conv_bias=conv_bias)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise InvalidArchError(f"unknown NAS-Bench-201 op {name!r}; allowed values: {list(OPS)}")


class NB201Cell(nn.Module):
    """The searched cell: node ``i`` is the sum of the ops on its incoming edges; the output is node 3."""

    def __init__(self, arch: Arch, channels: int, conv_bias: bool = False) -> None:
        super().__init__()
        self.edges = nn.ModuleList(make_op(str(arch[label]), channels, conv_bias) for label in LABELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes, edge = [x], 0
        for i in range(1, NODES):
            total = self.edges[edge](nodes[0])
            for j in range(1, i):
                total = total + self.edges[edge + j](nodes[j])
            edge += i
            nodes.append(total)
        return nodes[-1]


class ResidualReduction(nn.Module):
    """The benchmark's reduction block (``ResNetBasicblock``, stride 2): two ReLU-Conv-BN plus an avg-pool + 1x1 shortcut."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(in_chs, out_chs, 3, stride=2)
        self.conv_b = ReLUConvBN(out_chs, out_chs, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(in_chs, out_chs, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def _stages(channels: int, cells_per_stage: int, cell: Callable[[int], nn.Module]) -> tuple[list[nn.Module], list[int], int]:
    """The benchmark's cell sequence: 3 stages of ``cell(width)``, a residual reduction between stages; also the index of
    each stage's last module and the final width."""
    modules: list[nn.Module] = []
    ends, width = [], channels
    for stage in range(3):
        if stage > 0:
            modules.append(ResidualReduction(width, width * 2))
            width *= 2
        modules.extend(cell(width) for _ in range(cells_per_stage))
        ends.append(len(modules) - 1)
    return modules, ends, width


def _stem(in_channels: int, channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))


class NB201Network(nn.Module):
    """A NAS-Bench-201 CIFAR network: stem, 3 stages of cells with reductions between, BN-ReLU, pooling, classifier.

    ``forward`` returns the logits, or with ``features_only`` the output of each stage (a backbone for any task head);
    :meth:`feature_modules` lists the stem and every cell (the blocks whose outputs block-wise proxies such as AZ-NAS read).
    """

    def __init__(self, arch: Arch, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10, in_channels: int = 3,
                 cell_conv_bias: bool = False, features_only: bool = False) -> None:
        super().__init__()
        self.stem = _stem(in_channels, channels)
        cells, self.stage_ends, width = _stages(channels, cells_per_stage, lambda w: NB201Cell(arch, w, cell_conv_bias))
        self.cells = nn.ModuleList(cells)
        self.features_only = features_only
        if not features_only:
            self.lastact = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU())
            self.global_pooling = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(width, num_classes)

    def feature_modules(self) -> list[nn.Module]:
        return [self.stem, *self.cells]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for index, cell in enumerate(self.cells):
            x = cell(x)
            if index in self.stage_ends:
                features.append(x)
        if self.features_only:
            return features
        return self.classifier(torch.flatten(self.global_pooling(self.lastact(x)), 1))


class MixedEdge(nn.Module):
    """All five ops of one edge with their own weights; the active arch picks which one runs."""

    def __init__(self, channels: int, conv_bias: bool = False) -> None:
        super().__init__()
        self.ops = nn.ModuleDict({name: make_op(name, channels, conv_bias) for name in OPS})

    def forward(self, x: torch.Tensor, op: str) -> torch.Tensor:
        return self.ops[op](x)


class NB201SuperCell(nn.Module):
    """A cell whose every edge is a :class:`MixedEdge`; computes the cell of ``arch``."""

    def __init__(self, channels: int, conv_bias: bool = False) -> None:
        super().__init__()
        self.edges = nn.ModuleList(MixedEdge(channels, conv_bias) for _ in LABELS)

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        nodes, edge = [x], 0
        for i in range(1, NODES):
            total = self.edges[edge](nodes[0], str(arch[LABELS[edge]]))
            for j in range(1, i):
                total = total + self.edges[edge + j](nodes[j], str(arch[LABELS[edge + j]]))
            edge += i
            nodes.append(total)
        return nodes[-1]


class NB201Supernet(Supernet):
    """Weight-sharing supernet of the NAS-Bench-201 cells (as in the one-shot baselines of Dong & Yang, ICLR 2020: every
    edge keeps each op's weights; one cell design is shared by all cells). Returns each stage's output.

    :meth:`activate` is the only method that changes what it computes; :meth:`extract` copies the active ops' weights into
    a static :class:`NB201Network` (``features_only``).
    """

    def __init__(self, space: NB201Space) -> None:
        super().__init__()
        self.space = space
        self.stem = _stem(space.in_channels, space.channels)
        cells, self.stage_ends, _ = _stages(space.channels, space.cells_per_stage, lambda w: NB201SuperCell(w, space.cell_conv_bias))
        self.cells = nn.ModuleList(cells)
        self.activate(space.default())

    def activate(self, arch: Arch) -> None:
        self.space.validate(arch)
        self.arch = dict(arch)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for index, cell in enumerate(self.cells):
            x = cell(x, self.arch) if isinstance(cell, NB201SuperCell) else cell(x)
            if index in self.stage_ends:
                features.append(x)
        return features

    def extract(self, arch: Arch) -> NB201Network:
        net = self.space.build(arch)
        net.stem.load_state_dict(self.stem.state_dict())
        for static, shared in zip(net.cells, self.cells, strict=True):
            if isinstance(shared, NB201SuperCell):
                for edge, mixed, label in zip(static.edges, shared.edges, LABELS, strict=True):
                    edge.load_state_dict(mixed.ops[str(arch[label])].state_dict())
            else:
                static.load_state_dict(shared.state_dict())
        return net.train(self.training)


class NB201Space(SearchSpace):
    """The 15,625 NAS-Bench-201 cells (5 ops on 6 edges). ``build`` gives the benchmark's CIFAR network.

    ``cell_conv_bias=True`` builds the cells' convolutions as the zero-cost proxy reference (SamsungLabs/zero-cost-nas,
    ``nasbench2_ops.py``) does: with a bias and an affine-free BatchNorm (more parameters than the benchmark counts;
    the same outputs in training mode). Proxies that read layer outputs (fisher) see the bias.
    """

    def __init__(self, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10, in_channels: int = 3,
                 cell_conv_bias: bool = False) -> None:
        if channels < 1 or cells_per_stage < 1 or num_classes < 1:
            raise ValueError(f"channels, cells_per_stage and num_classes must be >= 1, got {channels}, {cells_per_stage}, {num_classes}")
        self.channels, self.cells_per_stage, self.num_classes, self.in_channels = channels, cells_per_stage, num_classes, in_channels
        self.cell_conv_bias = cell_conv_bias
        self.allowed = {label: OPS for label in LABELS}

    def validate(self, arch: Arch) -> None:
        check_arch(arch, self.allowed)

    def size(self) -> int:
        return len(OPS) ** len(LABELS)

    def sample(self, generator: torch.Generator) -> Arch:
        return {label: choose(OPS, generator) for label in LABELS}

    def suggest(self, trial: optuna.trial.BaseTrial) -> Arch:
        return {label: trial.suggest_categorical(label, list(OPS)) for label in LABELS}

    def mutate(self, arch: Arch, generator: torch.Generator) -> Arch:
        self.validate(arch)
        label = choose(LABELS, generator)
        return {**arch, label: choose([op for op in OPS if op != arch[label]], generator)}

    def default(self) -> Arch:
        """Every edge a 3x3 convolution (the largest cell)."""
        return {label: "nor_conv_3x3" for label in LABELS}

    def encode(self, arch: Arch) -> str:
        self.validate(arch)
        return "+".join("|" + "|".join(f"{arch[f'node{i}.edge{j}']}~{j}" for j in range(i)) + "|" for i in range(1, NODES))

    def decode(self, text: str) -> Arch:
        nodes = text.strip().split("+")
        if len(nodes) != NODES - 1:
            raise InvalidArchError(f"arch string {text!r} has {len(nodes)} nodes; NAS-Bench-201 has {NODES - 1} (format: {STRING_EXAMPLE})")
        arch: Arch = {}
        for i, node in enumerate(nodes, start=1):
            edges = node.split("|")
            if len(edges) != i + 2 or edges[0] or edges[-1]:
                raise InvalidArchError(f"node {i} of arch string {text!r} is {node!r}; expected {i} edges like '|op~0|' (format: {STRING_EXAMPLE})")
            for j, edge in enumerate(edges[1:-1]):
                op, _, source = edge.partition("~")
                if source != str(j):
                    raise InvalidArchError(f"edge {edge!r} of node {i} in {text!r} must come from node {j} ('{op}~{j}')")
                arch[f"node{i}.edge{j}"] = op
        self.validate(arch)
        return arch

    def feature_info(self, arch: Arch | None = None) -> list[FeatureInfo]:
        return [FeatureInfo(self.channels * 2**stage, 2**stage) for stage in range(3)]

    def parts(self, arch: Arch, input_shape: tuple[int, int, int]) -> list[Part]:
        """The stem, every edge's op at its stage's shape, and the two reductions (the benchmark network's classifier is
        not part of the backbone)."""
        channels, (height, width) = self.channels, input_shape[1:]
        parts = [Part(("stem", self.in_channels, channels, height, width), lambda: _stem(self.in_channels, self.channels),
                      tensor_input((self.in_channels, height, width)))]
        for stage in range(3):
            if stage > 0:
                parts.append(Part(("reduction", channels, height, width), lambda c=channels: ResidualReduction(c, 2 * c),
                                  tensor_input((channels, height, width))))
                channels, height, width = 2 * channels, -(-height // 2), -(-width // 2)
            for label in LABELS:
                op = str(arch[label])
                part = Part(("edge", op, channels, height, width, self.cell_conv_bias),
                            lambda op=op, c=channels: make_op(op, c, self.cell_conv_bias), tensor_input((channels, height, width)))
                parts += [part] * self.cells_per_stage
        return parts

    def build(self, arch: Arch) -> NB201Network:
        """The backbone of ``arch``: the benchmark network without its classifier, returning each stage's output."""
        self.validate(arch)
        return NB201Network(arch, self.channels, self.cells_per_stage, self.num_classes, self.in_channels, self.cell_conv_bias, features_only=True)

    def benchmark_network(self, arch: Arch) -> NB201Network:
        """The benchmark's CIFAR classifier for ``arch`` (logits; BN-ReLU, pooling and linear after the cells)."""
        self.validate(arch)
        return NB201Network(arch, self.channels, self.cells_per_stage, self.num_classes, self.in_channels, self.cell_conv_bias)

    def supernet(self) -> NB201Supernet:
        return NB201Supernet(self)
