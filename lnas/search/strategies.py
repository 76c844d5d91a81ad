"""Search strategies: which candidate to score next, given the leaderboard so far."""

from __future__ import annotations

from typing import Protocol

import torch

from lnas.search.leaderboard import Leaderboard
from lnas.spaces.arch import Arch
from lnas.spaces.base import SearchSpace


class Strategy(Protocol):
    def propose(self, space: SearchSpace, leaderboard: Leaderboard, generator: torch.Generator) -> Arch: ...


class RandomSearch:
    """Uniform samples of the space (Li & Talwalkar, 2019: a strong baseline for NAS)."""

    def propose(self, space: SearchSpace, leaderboard: Leaderboard, generator: torch.Generator) -> Arch:
        return space.sample(generator)


class EvolutionSearch:
    """Regularized evolution (Real et al., AAAI 2019) on the proxy score, restricted to feasible parents.

    The first ``population`` proposals are random; later ones mutate the best of ``tournament`` candidates drawn
    from the ``population`` most recent feasible ones (ageing: older candidates stop being parents).
    """

    def __init__(self, population: int = 16, tournament: int = 4) -> None:
        if population < 1 or not 1 <= tournament <= population:
            raise ValueError(f"need population >= 1 and 1 <= tournament <= population, got {population}, {tournament}")
        self.population, self.tournament = population, tournament

    def propose(self, space: SearchSpace, leaderboard: Leaderboard, generator: torch.Generator) -> Arch:
        recent = leaderboard.feasible()[-self.population:]
        if len(leaderboard) < self.population or not recent:
            return space.sample(generator)
        picks = torch.randint(len(recent), (self.tournament,), generator=generator).tolist()
        parent = max((recent[i] for i in picks), key=leaderboard.objective)
        return space.mutate(space.decode(parent.arch), generator)
