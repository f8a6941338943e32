import pytest

from infra.components.cloud_sql import Database, DatabaseArgs


def build(production: bool) -> Database:
    args = DatabaseArgs(
        project="p", region="europe-west1", production=production, deletion_protection=production
    )
    return Database("db", args)


@pytest.mark.parametrize("production", [True, False])
def test_cloud_sql_has_no_public_networks_and_prod_is_protected(mocks, deploy, production):
    deploy(lambda: {"db": build(production).connection_name})

    (instance,) = mocks.of_type("gcp:sql/databaseInstance:DatabaseInstance")
    settings = instance.inputs["settings"]
    assert instance.inputs["databaseVersion"] == "POSTGRES_16"
    assert settings["ipConfiguration"].get("authorizedNetworks", []) == []
    assert instance.inputs["deletionProtection"] is production
    assert settings["availabilityType"] == ("REGIONAL" if production else "ZONAL")
    assert settings["backupConfiguration"] == {
        "enabled": production,
        "pointInTimeRecoveryEnabled": production,
    }
    names = sorted(d.inputs["name"] for d in mocks.of_type("gcp:sql/database:Database"))
    assert names == ["mlflow", "optuna"]


#: How the Pulumi engine marks a secret value on the wire.
SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")


def test_password_is_a_secret_kept_in_secret_manager(mocks, deploy):
    outputs = deploy(lambda: {"secret": build(False).password_secret_id})

    (version,) = mocks.of_type("gcp:secretmanager/secretVersion:SecretVersion")
    (user,) = mocks.of_type("gcp:sql/user:User")
    for sent in (user.inputs["password"], version.inputs["secretData"]):
        assert sent[SECRET_SIG[0]] == SECRET_SIG[1], "password sent in clear"
        assert len(sent["value"]) == 32
    (secret,) = mocks.of_type("gcp:secretmanager/secret:Secret")
    assert secret.inputs["secretId"] == "db-db-password"
    assert outputs["secret"] == "db-db-password"
