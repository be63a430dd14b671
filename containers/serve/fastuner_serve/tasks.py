"""The dataset tasks an adapter may be trained for (its `fastuner.json` names one) and the family of each:
what a server of it does (classification: answer a label and scores; generation: generate text).

This program is separate from fastuner and keeps its own copy of fastuner's task table
(fastuner/config/tasks.py); tests/core/test_tasks.py pins the two equal.
"""

from __future__ import annotations

FAMILIES = ("classification", "generation")
TASK_FAMILIES = {"classification": "classification", "text_generation": "generation", "qa": "generation"}
