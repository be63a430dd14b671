"""The plan: pure `make_plan`, its actions and reasons, and its JSON form."""

from fastuner.plan.model import Action, Change, Plan, Reason
from fastuner.plan.observed import Observation, Observed
from fastuner.plan.planner import make_plan

__all__ = ["Action", "Change", "Observation", "Observed", "Plan", "Reason", "make_plan"]
