"""The guard-rails a command checks plans against: the spec's `policy:`, made stricter by a policy file
named with `--policy FILE` or FASTUNER_POLICY (CI names one for every project it runs). How the two
combine and what each rule checks is fastuner/plan/policy.py's."""

from __future__ import annotations

from fastuner.cli import runtime
from fastuner.config.loader import Spec, load_policy_file
from fastuner.plan.policy import EffectivePolicy, effective_policy

POLICY_ENV = "FASTUNER_POLICY"


def project_policy(spec: Spec, option: str | None) -> EffectivePolicy:
    """The spec's rules and those of the policy file `option` names (else FASTUNER_POLICY's, if set)."""
    name = option or runtime.current().environ.get(POLICY_ENV) or None
    if name is None:
        return effective_policy(spec.config.policy)
    return effective_policy(spec.config.policy, load_policy_file(name), name)
