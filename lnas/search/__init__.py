"""Multi-objective search under constraints: objectives, leaderboard, Pareto front and strategies on Optuna."""

from lnas.search.evolution import RegularizedEvolutionSampler
from lnas.search.leaderboard import Candidate, Leaderboard, NoFeasibleCandidateError
from lnas.search.objectives import Constraint, Objective, non_dominated_ranks
from lnas.search.strategies import OptunaSearch

__all__ = ["Candidate", "Constraint", "Leaderboard", "NoFeasibleCandidateError", "Objective", "OptunaSearch", "RegularizedEvolutionSampler",
           "non_dominated_ranks"]
