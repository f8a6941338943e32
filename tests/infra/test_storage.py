import pulumi

from infra.storage import Storage, StorageArgs


@pulumi.runtime.test
def test_bucket_is_never_public_and_keeps_versions(mocks):
    storage = Storage("data", StorageArgs(location="europe-west1"))

    def check(_: object) -> None:
        (bucket,) = mocks.of_type("gcp:storage/bucket:Bucket")
        inputs = bucket.inputs
        assert inputs["publicAccessPrevention"] == "enforced"
        assert inputs["uniformBucketLevelAccess"] is True
        assert inputs["versioning"] == {"enabled": True}
        assert inputs["forceDestroy"] is False
        conditions = [rule["condition"] for rule in inputs["lifecycleRules"]]
        assert {"numNewerVersions": 3, "withState": "ARCHIVED"} in conditions
        assert bucket.name == "data-bucket"

    return storage.bucket_name.apply(check)


@pulumi.runtime.test
def test_force_destroy_follows_the_args(mocks):
    storage = Storage("scratch", StorageArgs(location="europe-west1", force_destroy=True))

    def check(_: object) -> None:
        (bucket,) = mocks.of_type("gcp:storage/bucket:Bucket")
        assert bucket.inputs["forceDestroy"] is True

    return storage.url.apply(check)
