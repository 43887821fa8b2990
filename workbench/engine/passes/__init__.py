"""Graph passes: cleanup (level 1) and fusions (level 2), each leaving a change record and
provenance on the nodes it creates. See `optimize` and `rules`."""

from .fused_ops import FUSED_OPS, define_op
from .infra import (
    Change,
    FunctionPass,
    Pass,
    PassContext,
    PassError,
    PassManager,
    PassResult,
    PassTiming,
    Rejection,
)
from .optimize import LEVELS, Fate, OptimizeResult, all_passes, optimize
from .rules import Match, Rule, RulePass

__all__ = [
    "FUSED_OPS",
    "LEVELS",
    "Change",
    "Fate",
    "FunctionPass",
    "Match",
    "OptimizeResult",
    "Pass",
    "PassContext",
    "PassError",
    "PassManager",
    "PassResult",
    "PassTiming",
    "Rejection",
    "Rule",
    "RulePass",
    "all_passes",
    "define_op",
    "optimize",
]
