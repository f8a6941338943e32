from infra.components.artifact_registry import Registry, RegistryArgs


def test_registry_keeps_only_the_most_recent_images(mocks, deploy):
    args = RegistryArgs(project="p-dev", location="europe-west1", keep_images=5)
    outputs = deploy(lambda: {"path": Registry("images", args).path})

    (repo,) = mocks.of_type("gcp:artifactregistry/repository:Repository")
    assert repo.inputs["format"] == "DOCKER"
    assert repo.inputs["cleanupPolicyDryRun"] is False
    policies = {p["id"]: p for p in repo.inputs["cleanupPolicies"]}
    assert policies["keep-most-recent"]["action"] == "KEEP"
    assert policies["keep-most-recent"]["mostRecentVersions"] == {"keepCount": 5}
    assert policies["delete-everything-older"]["action"] == "DELETE"
    assert outputs["path"] == "europe-west1-docker.pkg.dev/p-dev/housing-mlops"
