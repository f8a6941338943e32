"""Storage: the one bucket for data, pipeline artifacts and MLflow artifacts."""

from __future__ import annotations

import msgspec
import pulumi
import pulumi_gcp as gcp

from infra.options import child_options

TYPE = "housing-mlops:index:Storage"


class StorageArgs(msgspec.Struct, frozen=True, kw_only=True):
    location: str
    """Bucket location (the stack's region)."""
    force_destroy: bool = False
    """Allow `pulumi destroy` to delete a non-empty bucket: dev only."""
    keep_versions: int = 3
    """Noncurrent versions kept per object before lifecycle deletes older ones."""
    noncurrent_days: int = 30
    """Days after which a noncurrent version is deleted regardless."""


class Storage(pulumi.ComponentResource):
    """A private bucket: uniform access, public access prevention enforced, versioned, with
    lifecycle rules so old versions don't pile up."""

    bucket_name: pulumi.Output[str]
    url: pulumi.Output[str]

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE, name, None, opts)
        self._name = name
        child = child_options(self, opts)
        self.bucket = gcp.storage.Bucket(
            f"{name}-bucket",
            location=args.location,
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            versioning=gcp.storage.BucketVersioningArgs(enabled=True),
            force_destroy=args.force_destroy,
            lifecycle_rules=[
                gcp.storage.BucketLifecycleRuleArgs(
                    action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                    condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                        num_newer_versions=args.keep_versions, with_state="ARCHIVED"
                    ),
                ),
                gcp.storage.BucketLifecycleRuleArgs(
                    action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                    condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                        days_since_noncurrent_time=args.noncurrent_days, with_state="ARCHIVED"
                    ),
                ),
            ],
            opts=child,
        )
        self.bucket_name = self.bucket.name
        self.url = self.bucket.url
        self.register_outputs({"bucket_name": self.bucket_name, "url": self.url})

    def grant(self, label: str, role: str, member: pulumi.Input[str]) -> pulumi.Resource:
        """Give ``member`` ``role`` on this bucket only (never project-wide storage roles)."""
        return gcp.storage.BucketIAMMember(
            f"{self._name}-{label}",
            bucket=self.bucket.name,
            role=role,
            member=member,
            opts=pulumi.ResourceOptions(parent=self),
        )
