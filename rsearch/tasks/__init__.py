"""Verifiable tasks in natural language for real chat models (sums, list lookups, counting, reversal) and their
known rater, the `tasks` rater spec.

    from rsearch.tasks import generate, rate_detail
    items = generate(200, seed=0)              # TaskItem: prompt, kind, operands, query, answer, split
    rate_detail(items[0].prompt, "64")         # {correct, style, score, extracted, …}

items.py has the kinds and phrasings, rater.py the parsing of prompts and replies and the score.
"""
from __future__ import annotations

from rsearch.tasks.items import KINDS, TaskItem, generate, right_answer
from rsearch.tasks.rater import TasksRater, rate_detail, task_of, true_score

__all__ = ["KINDS", "TaskItem", "TasksRater", "generate", "rate_detail", "right_answer", "task_of", "true_score"]
