"""Search strategies behind one ask/tell interface; importing this package registers the built-ins."""
from rsearch.strategies.base import REGISTRY, Candidate, Scored, Strategy, make_strategy, register
from rsearch.strategies import beam, gcg, optuna_templates, random  # noqa: F401  (register themselves)

__all__ = ["REGISTRY", "Candidate", "Scored", "Strategy", "make_strategy", "register"]
