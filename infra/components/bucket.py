"""Storage: the one bucket for data, pipeline artifacts and MLflow artifacts."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pulumi
import pulumi_gcp as gcp

from infra.options import child_options

TYPE = "housing-mlops:index:Storage"
#: Where the service's prediction log lives (``model_runtime.prediction_records.PREFIX`` under
#: the artifact store ``gs://<bucket>/artifacts``).
PREDICTIONS = "artifacts/predictions/"


def prefix_condition(bucket: str, prefixes: Sequence[str]) -> str:
    """CEL that holds for objects under ``prefixes`` only, and for listings of them. Object
    calls are checked against ``resource.name`` (``projects/_/buckets/<b>/objects/<key>``); a
    listing names the bucket, so it is matched by the prefix it asks for
    (``storage.googleapis.com/objectListPrefix``), or a prefix grant could never list."""
    objects = " || ".join(
        f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/{p}")' for p in prefixes
    )
    listed = " || ".join(
        f'api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("{p}")'
        for p in prefixes
    )
    return f"{objects} || {listed}"


class StorageArgs(msgspec.Struct, frozen=True, kw_only=True):
    location: str
    """Bucket location (the stack's region)."""
    force_destroy: bool = False
    """Allow `pulumi destroy` to delete a non-empty bucket: dev only."""
    keep_versions: int = 3
    """Noncurrent versions kept per object before lifecycle deletes older ones."""
    noncurrent_days: int = 30
    """Days after which a noncurrent version is deleted regardless."""
    prediction_retention_days: int | None = None
    """Days the prediction log (``artifacts/predictions/``) is kept; None: kept for ever."""


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
                *_retention_rules(args),
            ],
            opts=child,
        )
        self.bucket_name = self.bucket.name
        self.url = self.bucket.url
        self.register_outputs({"bucket_name": self.bucket_name, "url": self.url})

    def grant(
        self,
        label: str,
        role: str,
        member: pulumi.Input[str],
        prefixes: Sequence[str] = (),
    ) -> pulumi.Resource:
        """Give ``member`` ``role`` on this bucket only (never project-wide storage roles); with
        ``prefixes``, only on objects under them (an IAM condition: the bucket's uniform access
        is what lets a bucket grant carry one)."""
        condition = None
        if prefixes:
            condition = gcp.storage.BucketIAMMemberConditionArgs(
                title=f"{label}-prefixes",
                description="Only objects under " + ", ".join(prefixes),
                expression=self.bucket.name.apply(lambda b: prefix_condition(b, prefixes)),
            )
        return gcp.storage.BucketIAMMember(
            f"{self._name}-{label}",
            bucket=self.bucket.name,
            role=role,
            member=member,
            condition=condition,
            opts=pulumi.ResourceOptions(parent=self),
        )


def _retention_rules(args: StorageArgs) -> list[gcp.storage.BucketLifecycleRuleArgs]:
    """The prediction log's retention. The bucket is versioned, so an expired object first
    becomes a noncurrent version; the log's old versions (compaction leaves them too) go a day
    later instead of after ``noncurrent_days``, or the log would be stored twice."""
    if args.prediction_retention_days is None:
        return []
    delete = gcp.storage.BucketLifecycleRuleActionArgs(type="Delete")
    return [
        gcp.storage.BucketLifecycleRuleArgs(
            action=delete,
            condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                age=args.prediction_retention_days,
                matches_prefixes=[PREDICTIONS],
                with_state="LIVE",
            ),
        ),
        gcp.storage.BucketLifecycleRuleArgs(
            action=delete,
            condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                days_since_noncurrent_time=1,
                matches_prefixes=[PREDICTIONS],
                with_state="ARCHIVED",
            ),
        ),
    ]
