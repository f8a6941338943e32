"""The housing-mlops policy pack: ``pulumi preview --policy-pack infra/policy``."""

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from infra.policy.rules import RULES, Rule


def adapt(rule: Rule) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        for message in rule(args.resource_type, args.props):
            report(message, None)

    return validate


PolicyPack(
    name="housing-mlops",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        ResourceValidationPolicy(name=name, description=description, validate=adapt(rule))
        for name, (description, rule) in RULES.items()
    ],
)
