"""Multi-objective search under constraints: leaderboard, Pareto front and strategies."""

from lnas.search.leaderboard import Candidate, Leaderboard, NoFeasibleCandidateError, pareto_mask
from lnas.search.strategies import EvolutionSearch, RandomSearch, Strategy

__all__ = ["Candidate", "EvolutionSearch", "Leaderboard", "NoFeasibleCandidateError", "RandomSearch", "Strategy", "pareto_mask"]
