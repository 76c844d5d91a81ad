"""The interface every search space implements (DESIGN.md §3)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import optuna
import torch
from torch import nn

from lnas.spaces.arch import Arch
from lnas.spaces.parts import Part


@dataclass(frozen=True)
class FeatureInfo:
    """One output level of a backbone: its channels and its stride (reduction) w.r.t. the input (timm naming)."""

    num_chs: int
    reduction: int


class SearchSpace(ABC):
    """A set of candidate networks. All randomness comes from the ``torch.Generator`` passed in."""

    @abstractmethod
    def size(self) -> int:
        """Exact number of distinct candidates."""

    @abstractmethod
    def sample(self, generator: torch.Generator) -> Arch:
        """A uniformly drawn candidate (uniform per label)."""

    @abstractmethod
    def mutate(self, arch: Arch, generator: torch.Generator) -> Arch:
        """A copy of ``arch`` with one choice redrawn to a different value."""

    @abstractmethod
    def suggest(self, trial: optuna.trial.BaseTrial) -> Arch:
        """The arch an Optuna trial proposes: one ``trial.suggest_categorical(label, choices)`` per label (define-by-run,
        so labels that exist only for some choices, such as the blocks of a deeper stage, are asked only then)."""

    @abstractmethod
    def default(self) -> Arch:
        """The reference point of the space (e.g. the user's baseline)."""

    def scalings(self, arch: Arch) -> list[Arch]:
        """The cheaper versions of ``arch`` made by scaling it down uniformly (EfficientNet's compound scaling, Tan & Le,
        ICML 2019, run downwards), ``arch`` itself excluded. A space without ordered dimensions (e.g. a cell of
        operations) has none."""
        return []

    @abstractmethod
    def validate(self, arch: Arch) -> None:
        """Raise :class:`~lnas.spaces.arch.InvalidArchError` unless ``arch`` belongs to the space."""

    @abstractmethod
    def encode(self, arch: Arch) -> str:
        """Short string form, used as key, log tag and file name."""

    @abstractmethod
    def decode(self, text: str) -> Arch:
        """Inverse of :meth:`encode`."""

    @abstractmethod
    def feature_info(self, arch: Arch | None = None) -> list[FeatureInfo]:
        """Channels and stride of each output level of ``arch``; without one, of the supernet (its widest channels)."""

    @abstractmethod
    def build(self, arch: Arch) -> nn.Module:
        """A freshly initialised static backbone for ``arch``: it returns the features :meth:`feature_info` describes."""

    @abstractmethod
    def supernet(self) -> Supernet:
        """A weight-sharing supernet over this space."""

    @abstractmethod
    def parts(self, arch: Arch, input_shape: tuple[int, int, int]) -> list[Part]:
        """The backbone of ``arch`` for inputs ``(C, H, W)`` as :class:`~lnas.spaces.parts.Part` s whose parameters and
        FLOPs add up to the backbone's (its costs from the arch alone)."""


class Supernet(nn.Module, ABC):
    """One module whose weights every candidate of a space shares (Once-for-All, Cai et al., ICLR 2020).

    :meth:`activate` is the only method that changes what it computes; :meth:`extract` gives a plain static backbone
    for any arch, holding copies of the shared weights, without changing the active arch.
    """

    arch: Arch

    @abstractmethod
    def activate(self, arch: Arch) -> None:
        """Make ``arch`` the network this module computes."""

    @abstractmethod
    def extract(self, arch: Arch) -> nn.Module:
        """A static backbone for ``arch`` with the shared weights copied in."""
