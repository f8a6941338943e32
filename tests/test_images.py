"""The pure parts of `nox -s images` (devtools/images.py): how it decides to build, the command
lines, the size table, what the build context and each image hold. Building and starting the
images is the session's job, not the suite's."""

from __future__ import annotations

import resource
import subprocess
import tomllib
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths

from devtools import images
from devtools.images import IMAGES, ImageSpec

ROOT = Path(__file__).resolve().parents[1]


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def context_of(tmp_path: Path, files: list[str]) -> set[str]:
    """The files of a build context holding ``files``, as the Docker CLI sends it (docker-py
    implements the CLI's rules: Go's filepath.Match per pattern, `**`, excluded directories)."""
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    sent = exclude_paths(str(tmp_path), dockerignore())
    return {p for p in sent if (tmp_path / p).is_file()}


LEFT_BEHIND = [
    "pipeline/foo.parquet",
    "pipeline/data/raw.parquet",
    "service/mlruns/0/meta.yaml",
    "service/mlflow.db",
    "ui/wandb/run-1/files/config.yaml",
    "pipeline/.housing-mlops/artifacts/x.json",
    "pipeline/mlartifacts/1/model.onnx",
    "pipeline/tests/test_x.py",
    "service/__pycache__/app.cpython-311.pyc",
    "infra/policy/venv/bin/python",
    "tests/test_x.py",
    "mlflow.db",
    ".venv/bin/python",
    ".git/HEAD",
]


@pytest.mark.parametrize("path", LEFT_BEHIND)
def test_data_runs_and_venvs_stay_out_of_the_build_context_at_any_depth(tmp_path, path):
    """Before, `*.parquet`, `*.db`, `wandb`, `mlruns` and `tests` matched only at the root: a file
    left under a package went into the build and the wheel."""
    assert path not in context_of(tmp_path, [path, "model_runtime/contract.py"])


def test_everything_a_dockerfile_copies_reaches_the_build(tmp_path):
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    sent = context_of(tmp_path, tracked)
    for spec in IMAGES:
        for source in images.copied_sources((ROOT / spec.dockerfile).read_text()):
            wanted = [
                p
                for p in tracked
                if (p == source or p.startswith(source.rstrip("/") + "/"))
                and not p.endswith("Dockerfile")  # not sources: kept out of the context
            ]
            assert wanted, f"{spec.dockerfile}: COPY {source} names no tracked file"
            assert sorted(set(wanted) - sent) == [], f"{spec.dockerfile}: COPY {source}"


# --- What each image holds ----------------------------------------------------------------------


@pytest.mark.parametrize("spec", IMAGES, ids=lambda s: s.name)
def test_each_image_copies_every_module_its_entry_points_import(spec):
    """Checked by import, at any depth: the service's fallback needs model_runtime.transformers (the
    skops types), every MLflow image the ID-token plugin, the UI the schema and id_token."""
    assert images.uncopied_modules(spec) == []


def test_each_image_copies_only_its_parts_sources():
    """Before, every image copied all four packages (the service image held ui/ and infra/)."""
    copied = {spec.name: images.copied_packages(spec) for spec in IMAGES}
    shared = {"model_runtime", "housing_platform"}
    assert copied == {
        "pipeline": {"pipeline", "batch_prediction", "service", *shared},  # service: 5 modules
        "mlflow": {"tracking_server", "housing_platform"},
        "service": {"pipeline", "service", *shared},  # pipeline/transformers.py only
        "ui": {"ui", *shared},
    }


def test_import_closure_follows_imports_inside_functions(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "a.py").write_text("def f():\n    from pipeline.b import x\n")
    (tmp_path / "pipeline" / "b.py").write_text("import json\nimport pipeline.c\n")
    (tmp_path / "pipeline" / "c.py").write_text("")
    (tmp_path / "pipeline" / "d.py").write_text("")
    assert images.import_closure(["pipeline.a"], tmp_path) == {
        "pipeline",
        "pipeline.a",
        "pipeline.b",
        "pipeline.c",
    }


def locked() -> dict:
    return tomllib.loads((ROOT / "uv.lock").read_text())


def test_the_core_dependencies_are_only_what_every_part_imports():
    """Before, numpy, pandas, pyarrow and scikit-learn were core: every group, so every image,
    had them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [d.split(">")[0] for d in project["dependencies"]] == ["msgspec"]


def test_the_ui_group_holds_no_model_stack():
    installed = images.locked_closure(locked(), "ui")
    assert {"streamlit", "httpx", "google-auth", "pandas"} <= installed
    assert not installed & {"scikit-learn", "scipy", "mlflow", "mlflow-skinny", "onnxruntime"}


def test_the_service_group_loads_the_model_without_ui_training_or_cloud_stacks():
    installed = images.locked_closure(locked(), "service")
    assert {"scikit-learn", "skops", "onnxruntime", "mlflow-skinny", "litestar"} <= installed
    assert "pyarrow" in installed  # the prediction log's parquet objects
    assert not installed & {"streamlit", "pulumi", "optuna", "wandb", "mlflow"}


def test_the_probe_names_what_is_wrong_with_an_image():
    spec = images.spec_named("ui")
    result = {
        "uid": 0,
        "failed": {
            "housing_platform.id_token": "ModuleNotFoundError: No module named 'housing_platform'"
        },
        "present": ["sklearn"],
        "plugins": [],
        "token": "",
    }
    assert images.probe_problems(spec, result) == [
        "housing_platform.id_token does not import: "
        "ModuleNotFoundError: No module named 'housing_platform'",
        "sklearn is in the image, and should not be",
        "runs as root",
        "the ID-token path did not run",
    ]
    fine = {"uid": 10001, "failed": {}, "present": [], "plugins": [], "token": "TransportError"}
    assert images.probe_problems(spec, fine) == []


def test_an_mlflow_image_without_the_id_token_plugin_is_refused():
    spec = images.spec_named("service")
    result = {"uid": 10001, "failed": {}, "present": [], "plugins": [], "token": "RefreshError"}
    assert images.probe_problems(spec, result) == [
        "the google-id-token MLflow plugin is not registered"
    ]


# --- How it builds -------------------------------------------------------------------------------


def which_of(*present: str):
    return lambda tool: f"/usr/bin/{tool}" if tool in present else None


def test_docker_builds_when_its_daemon_answers():
    assert images.plan_engine(True, which_of(), can_apt=False) == images.EnginePlan("docker")


def test_without_a_daemon_buildah_and_podman_build_and_run():
    plan = images.plan_engine(False, which_of("docker", "buildah", "podman", "runc"), False)
    assert plan == images.EnginePlan("podman")


def test_missing_tools_are_installed_with_apt_when_it_can_run():
    plan = images.plan_engine(False, which_of("podman"), can_apt=True)
    assert plan == images.EnginePlan("podman", install=("buildah", "runc"))


def test_missing_tools_without_apt_stop_with_one_line_naming_them():
    plan = images.plan_engine(False, which_of(), can_apt=False)
    assert plan.engine is None
    assert plan.error == (
        "no Docker daemon answers and buildah, podman, runc missing: start Docker, or install "
        "them (apt-get install buildah podman runc) as root"
    )


DEFAULTS = {"BASE_IMAGE": "python:3.11.11-slim-bookworm", "UV_IMAGE": "ghcr.io/astral-sh/uv:0.9.7"}


def test_bases_that_cannot_be_had_get_stand_ins():
    assert images.plan_bases(DEFAULTS, lambda ref: False) == {
        "BASE_IMAGE": "localhost/housing-standin/python:3.11.11-slim-bookworm",
        "UV_IMAGE": "localhost/housing-standin/uv:0.9.7",
    }


def test_real_bases_are_used_fully_qualified():
    """podman matches a short name to any local image of that name: a stand-in would do."""
    asked: list[str] = []
    chosen = images.plan_bases(DEFAULTS, lambda ref: asked.append(ref) or True)
    assert chosen == {
        "BASE_IMAGE": "docker.io/library/python:3.11.11-slim-bookworm",
        "UV_IMAGE": "ghcr.io/astral-sh/uv:0.9.7",
    }
    assert asked == list(chosen.values())


def test_the_dockerfiles_name_their_bases_as_build_args():
    for spec in IMAGES:
        assert images.base_args((ROOT / spec.dockerfile).read_text()) == DEFAULTS


def test_a_python_stand_in_needs_debians_python_of_the_same_minor_version():
    assert images.python_standin("python:3.11.11-slim-bookworm") == ("bookworm", "3.11")
    assert images.python_standin("python:3.13.2-slim-trixie") == ("trixie", "3.13")
    with pytest.raises(ValueError, match=r"bookworm's python3 is 3\.11, not 3\.12"):
        images.python_standin("python:3.12.8-slim-bookworm")
    with pytest.raises(ValueError, match=r"only python:X\.Y\.Z-slim-<suite> tags"):
        images.python_standin("python@sha256:" + "0" * 64)


def test_the_uv_stand_in_is_the_version_the_dockerfiles_copy():
    assert images.uv_version("ghcr.io/astral-sh/uv:0.9.7") == "0.9.7"
    with pytest.raises(ValueError, match=r"only ghcr\.io/astral-sh/uv:<version> has one"):
        images.uv_version("ghcr.io/astral-sh/uv:latest")


def test_the_stand_in_base_is_a_slim_debian_with_python_where_the_images_have_it(tmp_path):
    command = images.mmdebstrap_command("bookworm", tmp_path / "base.tar")
    assert command[:3] == ["mmdebstrap", "--variant=minbase", "--include=python3,ca-certificates"]
    assert '"$1/usr/local/bin/python"' in " ".join(command)
    assert command[-3:] == ["bookworm", str(tmp_path / "base.tar"), "http://deb.debian.org/debian"]


def test_buildah_keeps_the_healthcheck_and_gets_the_ca_bundle_as_a_secret():
    spec = images.spec_named("service")
    command = images.build_command(
        "podman", spec, {"UV_IMAGE": "u", "BASE_IMAGE": "b"}, Path("/etc/ca.crt")
    )
    assert command[:5] == ["buildah", "bud", "--format", "docker", "--layers"]
    assert command[5:9] == ["-f", str(ROOT / "service/Dockerfile"), "-t", spec.tag]
    assert command[9:] == [
        "--build-arg",
        "BASE_IMAGE=b",
        "--build-arg",
        "UV_IMAGE=u",
        "--secret",
        "id=ca_bundle,src=/etc/ca.crt",
        str(ROOT),
    ]


def test_docker_builds_with_buildkit_and_the_same_arguments():
    spec = images.spec_named("ui")
    command = images.build_command("docker", spec, {"BASE_IMAGE": "b"}, None)
    assert command == [
        "docker",
        "build",
        "-f",
        str(ROOT / "ui/Dockerfile"),
        "-t",
        spec.tag,
        "--build-arg",
        "BASE_IMAGE=b",
        str(ROOT),
    ]
    assert images.engine_env("docker", {})["DOCKER_BUILDKIT"] == "1"


def test_buildah_and_podman_run_without_a_daemon_unless_told_otherwise():
    assert images.engine_env("podman", {"PATH": "/bin"}) == {
        "PATH": "/bin",
        "STORAGE_DRIVER": "vfs",
        "BUILDAH_ISOLATION": "chroot",
    }
    assert images.engine_env("podman", {"STORAGE_DRIVER": "overlay"})["STORAGE_DRIVER"] == (
        "overlay"
    )


def test_containers_share_the_host_network_and_run_with_runc_and_explicit_limits(tmp_path):
    command = images.run_command(
        "podman",
        "img",
        name="c",
        env={"HOST": "127.0.0.1", "PORT": "5"},
        volumes={tmp_path: "/home/app/x"},
        detach=True,
        ulimits=["--ulimit", "nofile=10:10"],
    )
    assert command == [
        "podman",
        "run",
        "--name",
        "c",
        "--network",
        "host",
        "--runtime",
        "runc",
        "--ulimit",
        "nofile=10:10",
        "--detach",
        "-e",
        "HOST=127.0.0.1",
        "-e",
        "PORT=5",
        "-v",
        f"{tmp_path}:/home/app/x",
        "img",
    ]
    once = images.run_command("docker", "img", name="c", entrypoint="python", args=["-c", "1"])
    assert once == [
        "docker",
        "run",
        "--name",
        "c",
        "--network",
        "host",
        "--rm",
        "--entrypoint",
        "python",
        "img",
        "-c",
        "1",
    ]


def test_no_check_binds_beyond_loopback():
    source = (ROOT / "devtools" / "images.py").read_text()
    assert "0.0.0.0" not in source
    assert '"HOST": "127.0.0.1"' in source


def test_ulimits_follow_this_machines_open_files_and_cap_processes():
    limits = {resource.RLIMIT_NOFILE: (20000, 20000), resource.RLIMIT_NPROC: (96364, 96364)}
    assert images.ulimit_flags(limits.__getitem__) == [
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=4096:4096",
    ]
    unlimited = {
        resource.RLIMIT_NOFILE: (1024, resource.RLIM_INFINITY),
        resource.RLIMIT_NPROC: (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
    }
    assert images.ulimit_flags(unlimited.__getitem__)[1::2] == [
        "nofile=1024:1024",
        "nproc=4096:4096",
    ]


def test_references_are_qualified_as_registries_resolve_them():
    assert images.qualified("python:3.11") == "docker.io/library/python:3.11"
    assert images.qualified("grafana/grafana:1") == "docker.io/grafana/grafana:1"
    assert images.qualified("ghcr.io/astral-sh/uv:0.9.7") == "ghcr.io/astral-sh/uv:0.9.7"
    assert images.qualified("localhost/x:1") == "localhost/x:1"
    assert images.qualified("localhost:5000/x:1") == "localhost:5000/x:1"


def test_the_size_table_compares_with_the_sizes_before():
    table = images.size_table([("ui", 401_000_000, 857_487_501), ("service", 1_000_000, None)])
    assert table.splitlines() == [
        "| image | size | before | change |",
        "| --- | ---: | ---: | ---: |",
        "| ui | 401 MB | 857 MB | -53% |",
        "| service | 1 MB | | |",
    ]


def test_the_probe_asks_each_image_what_its_spec_says():
    spec = ImageSpec("x", "x/Dockerfile", "x", (), ("a",), ("b",))
    assert images.probe_request(spec) == {"imports": ["a"], "absent": ["b"]}
    assert "token_audience" in images.probe_request(images.spec_named("ui"))


def test_the_healthcheck_runs_as_the_image_declares_it():
    assert images.healthcheck_command(["CMD", "python", "-c", "x"]) == ["python", "-c", "x"]
    assert images.healthcheck_command(["CMD-SHELL", "curl -f x"]) == ["sh", "-c", "curl -f x"]
    assert images.healthcheck_command(["NONE"]) == []
    assert images.healthcheck_command([]) == []
