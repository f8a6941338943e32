"""The Google APIs the platform uses, enabled by the program so a fresh project works on the
first ``pulumi up``."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

SERVICES = (
    "artifactregistry.googleapis.com",
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "sqladmin.googleapis.com",
    "sts.googleapis.com",
)


def enable(project: str) -> list[pulumi.Resource]:
    """One ``gcp.projects.Service`` per API; never disabled on destroy (other stacks may use it)."""
    return [
        gcp.projects.Service(
            f"api-{service.split('.')[0]}",
            project=project,
            service=service,
            disable_on_destroy=False,
        )
        for service in SERVICES
    ]
