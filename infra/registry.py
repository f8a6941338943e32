"""Registry: the Artifact Registry Docker repository of the platform's four images."""

from __future__ import annotations

import msgspec
import pulumi
import pulumi_gcp as gcp

from infra.options import child_options

TYPE = "housing-mlops:index:Registry"


class RegistryArgs(msgspec.Struct, frozen=True, kw_only=True):
    project: str
    """GCP project (gcp:project)."""
    location: str
    """Repository location (the stack's region)."""
    keep_images: int = 10
    """Most recent versions kept per image; older ones are deleted by cleanup policy."""
    repository_id: str = "housing-mlops"


class Registry(pulumi.ComponentResource):
    """A Docker repository whose cleanup policies delete all but the last N versions."""

    path: pulumi.Output[str]

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE, name, None, opts)
        self.repository = gcp.artifactregistry.Repository(
            f"{name}-repository",
            repository_id=args.repository_id,
            project=args.project,
            location=args.location,
            format="DOCKER",
            cleanup_policy_dry_run=False,
            cleanup_policies=[
                # Keep policies win over delete policies: everything but the newest N goes.
                gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                    id="delete-everything-older",
                    action="DELETE",
                    condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                        tag_state="ANY"
                    ),
                ),
                gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                    id="keep-most-recent",
                    action="KEEP",
                    most_recent_versions=gcp.artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(
                        keep_count=args.keep_images
                    ),
                ),
            ],
            opts=child_options(self, opts),
        )
        self.path = pulumi.Output.concat(
            args.location, "-docker.pkg.dev/", args.project, "/", self.repository.repository_id
        )
        self.register_outputs({"path": self.path})
