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
    keep_digests: tuple[str, ...] = ()
    """``sha256:…`` of every image a stack serves or may roll back to: never cleaned up, however
    many newer versions are pushed."""


def deployed_digests(refs: list[str]) -> tuple[str, ...]:
    """``sha256:<hex>`` of each reference pinned by digest (tags can't be kept by rule)."""
    return tuple(sorted({r.rsplit("@", 1)[1] for r in refs if "@sha256:" in r}))


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
                *(
                    [
                        # A version's name is its digest: what the stack file pins stays.
                        gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                            id="keep-deployed",
                            action="KEEP",
                            condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                                tag_state="ANY", version_name_prefixes=list(args.keep_digests)
                            ),
                        )
                    ]
                    if args.keep_digests
                    else []
                ),
            ],
            opts=child_options(self, opts),
        )
        self.path = pulumi.Output.concat(
            args.location, "-docker.pkg.dev/", args.project, "/", self.repository.repository_id
        )
        self.register_outputs({"path": self.path})
