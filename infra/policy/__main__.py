"""The housing-mlops policy pack: ``pulumi preview --policy-pack infra/policy``.

Adapts the pure rules of ``rules.py``: properties become plain values with the engine's unknowns
as ``rules.Unknown``; a rule that needs an unknown value gets Pulumi's own "can't run during
preview" treatment (it runs again in ``up``).
"""

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from infra.policy import rules


def plain(value: Any) -> Any:
    """The engine's properties (pulumi_policy's unknown-checking proxies) as dicts and lists,
    each unknown value a ``rules.Unknown`` carrying the engine's sentinel."""
    if isinstance(value, Mapping):
        return {key: _item(value, key) for key in value}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_item(value, index) for index in range(len(value))]
    return value


def _item(container: Any, key: Any) -> Any:
    try:
        return plain(container[key])
    except UnknownValueError as unknown:
        return rules.Unknown(unknown.unknown_type_sentinel)


def _unknown(exc: rules.UnknownValueError) -> UnknownValueError:
    return UnknownValueError(exc.value.sentinel, exc.path)


def adapt(rule: rules.Rule) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        try:
            found = rule(args.resource_type, plain(args.props))
        except rules.UnknownValueError as exc:
            raise _unknown(exc) from None
        for message in found:
            report(message, None)

    return validate


def adapt_stack(rule: rules.StackRule) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        resources = [
            rules.StackResource(
                type=r.resource_type,
                urn=r.urn,
                name=r.name,
                props=plain(r.props),
                property_dependencies={
                    prop: [d.urn for d in deps] for prop, deps in r.property_dependencies.items()
                },
            )
            for r in args.resources
        ]
        try:
            found = rule(resources)
        except rules.UnknownValueError as exc:
            raise _unknown(exc) from None
        for urn, message in found:
            report(message, urn)

    return validate


PolicyPack(
    name="housing-mlops",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        *(
            ResourceValidationPolicy(name=name, description=description, validate=adapt(rule))
            for name, (description, rule) in rules.RULES.items()
        ),
        *(
            StackValidationPolicy(name=name, description=description, validate=adapt_stack(rule))
            for name, (description, rule) in rules.STACK_RULES.items()
        ),
    ],
)
