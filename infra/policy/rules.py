"""The guardrails, as pure functions of a resource's type and properties (camelCase, as the
engine sees them): each returns the violations it finds, so the rules are tested directly and
the policy pack only adapts them."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

Rule = Callable[[str, Mapping[str, Any]], list[str]]

BUCKET = "gcp:storage/bucket:Bucket"
SQL_INSTANCE = "gcp:sql/databaseInstance:DatabaseInstance"
RUN_SERVICE = "gcp:cloudrunv2/service:Service"
RUN_JOB = "gcp:cloudrunv2/job:Job"
SERVICE_IAM = (
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
    "gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding",
)
JOB_IAM = ("gcp:cloudrunv2/jobIamMember:JobIamMember", "gcp:cloudrunv2/jobIamBinding:JobIamBinding")
PUBLIC = {"allUsers", "allAuthenticatedUsers"}
#: Services that must never be public, whatever config says.
PRIVATE_SERVICES = {"housing-mlflow"}
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY|CREDENTIALS?)$")


def _members(props: Mapping[str, Any]) -> list[str]:
    members = list(props.get("members") or [])
    if props.get("member"):
        members.append(props["member"])
    return [str(m) for m in members]


def bucket_is_private(typ: str, props: Mapping[str, Any]) -> list[str]:
    if typ != BUCKET:
        return []
    found = []
    if props.get("publicAccessPrevention") != "enforced":
        found.append("bucket must set publicAccessPrevention to 'enforced'")
    if props.get("uniformBucketLevelAccess") is not True:
        found.append("bucket must enable uniformBucketLevelAccess (no per-object ACLs)")
    return found


def no_public_mlflow_or_jobs(typ: str, props: Mapping[str, Any]) -> list[str]:
    public = PUBLIC.intersection(_members(props))
    if not public:
        return []
    if typ in JOB_IAM:
        return [
            f"Cloud Run job {props.get('name')!r} grants {sorted(public)}: jobs are never public"
        ]
    if typ in SERVICE_IAM and props.get("name") in PRIVATE_SERVICES:
        return [f"{props.get('name')} grants {sorted(public)}: MLflow is never public"]
    return []


def cloud_sql_is_closed(typ: str, props: Mapping[str, Any]) -> list[str]:
    if typ != SQL_INSTANCE:
        return []
    settings = props.get("settings") or {}
    found = []
    for network in (settings.get("ipConfiguration") or {}).get("authorizedNetworks") or []:
        value = str(network.get("value", ""))
        try:
            private = ipaddress.ip_network(value, strict=False).is_private
        except ValueError:
            private = False
        if not private:
            found.append(f"Cloud SQL authorizes public network {value!r}: use the connector")
    if (settings.get("userLabels") or {}).get("environment") == "prod":
        backups = settings.get("backupConfiguration") or {}
        if not backups.get("enabled") or not backups.get("pointInTimeRecoveryEnabled"):
            found.append("production Cloud SQL must enable backups with point-in-time recovery")
        if props.get("deletionProtection") is not True:
            found.append("production Cloud SQL must set deletionProtection")
    return found


def services_have_max_instances(typ: str, props: Mapping[str, Any]) -> list[str]:
    if typ != RUN_SERVICE:
        return []
    scaling = (props.get("template") or {}).get("scaling") or {}
    if not scaling.get("maxInstanceCount"):
        return [
            f"Cloud Run service {props.get('name')!r} must set template.scaling.maxInstanceCount"
        ]
    return []


def no_plaintext_secrets(typ: str, props: Mapping[str, Any]) -> list[str]:
    if typ == RUN_SERVICE:
        containers = (props.get("template") or {}).get("containers") or []
    elif typ == RUN_JOB:
        containers = ((props.get("template") or {}).get("template") or {}).get("containers") or []
    else:
        return []
    return [
        f"env var {env['name']} looks like a secret but is plain text: use a Secret Manager "
        "reference (valueSource.secretKeyRef)"
        for container in containers
        for env in container.get("envs") or []
        if SECRET_NAME.search(str(env.get("name", "")).upper()) and "value" in env
    ]


RULES: dict[str, tuple[str, Rule]] = {
    "bucket-private": (
        "Buckets enforce public access prevention and uniform bucket-level access.",
        bucket_is_private,
    ),
    "no-public-mlflow-or-jobs": (
        "No allUsers/allAuthenticatedUsers invoker on MLflow or on Cloud Run jobs.",
        no_public_mlflow_or_jobs,
    ),
    "cloud-sql-closed": (
        "Cloud SQL has no public authorized networks; in production, backups with PITR and "
        "deletion protection.",
        cloud_sql_is_closed,
    ),
    "cloud-run-max-instances": (
        "Every Cloud Run service caps its instance count.",
        services_have_max_instances,
    ),
    "no-plaintext-secrets": (
        "No plain-text env var whose name looks like a secret.",
        no_plaintext_secrets,
    ),
}


def violations(typ: str, props: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every rule's findings for one resource (rules with none are left out)."""
    found = {name: rule(typ, props) for name, (_, rule) in RULES.items()}
    return {name: messages for name, messages in found.items() if messages}
