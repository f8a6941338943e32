"""The Google APIs the platform uses, enabled by the program so a fresh project works on the
first ``pulumi up``.

Two can't enable themselves: Service Usage (which ``projects.Service`` calls) and Cloud Resource
Manager (read by ``projects.Service`` and needed by every project-level IAM member). The README's
first step enables both with ``gcloud services enable``; they are declared here too, so the stack
records that it needs them and a destroy never turns them off.
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

SERVICES = (
    "serviceusage.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "artifactregistry.googleapis.com",
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "monitoring.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
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
