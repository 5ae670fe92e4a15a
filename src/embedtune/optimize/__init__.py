"""The strategy search: the space, trials scored on growing samples, the Pareto front and the choice.

Layered as: :mod:`.space` (what may be chosen), :mod:`.trials` (scoring one strategy through the
stores and the cache), :mod:`.pareto` (budget, front, choice: pure), :mod:`.workflow` (the optuna
study that ties them), :mod:`.report` (table, JSON, PNG) and :mod:`.generated` (queries generated
from a corpus without judgments, to select on). optuna is imported only when a search runs.
"""

from embedtune.optimize.generated import generated_search_collection
from embedtune.optimize.pareto import Budget, NoStrategyFitsError, choose, pareto_front
from embedtune.optimize.space import SearchSpace, offline_models
from embedtune.optimize.workflow import OptimizeResult, TrialRecord, optimize

__all__ = [
    "Budget",
    "NoStrategyFitsError",
    "OptimizeResult",
    "SearchSpace",
    "TrialRecord",
    "choose",
    "generated_search_collection",
    "offline_models",
    "optimize",
    "pareto_front",
]
