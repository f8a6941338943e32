from infra.components.bucket import Storage, StorageArgs


def test_bucket_is_never_public_and_keeps_versions(mocks, deploy):
    outputs = deploy(lambda: {"url": Storage("data", StorageArgs(location="europe-west1")).url})

    (bucket,) = mocks.of_type("gcp:storage/bucket:Bucket")
    inputs = bucket.inputs
    assert inputs["publicAccessPrevention"] == "enforced"
    assert inputs["uniformBucketLevelAccess"] is True
    assert inputs["versioning"] == {"enabled": True}
    assert inputs["forceDestroy"] is False
    conditions = [rule["condition"] for rule in inputs["lifecycleRules"]]
    assert {"numNewerVersions": 3, "withState": "ARCHIVED"} in conditions
    assert bucket.name == "data-bucket"
    assert outputs["url"] == "gs://data-bucket"


def test_force_destroy_follows_the_args(mocks, deploy):
    args = StorageArgs(location="europe-west1", force_destroy=True)
    deploy(lambda: {"url": Storage("scratch", args).url})

    (bucket,) = mocks.of_type("gcp:storage/bucket:Bucket")
    assert bucket.inputs["forceDestroy"] is True
