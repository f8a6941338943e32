"""The one settings reader: defaults < file < environment < flags, and every error names the key
as the user wrote it (the variable, the file's key, the flag) and how to fix it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

import msgspec
import pytest
from msgspec import Meta

from housing_platform.settings_reader import Problem, SettingsError, read_settings


class Server(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    port: Annotated[int, Meta(ge=1, le=65535)] = 8080
    workers: Annotated[int, Meta(ge=1)] = 1
    origins: tuple[str, ...] = ()


class Demo(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    name: str = "demo"
    share: Annotated[float, Meta(ge=0, lt=1)] = 0.2
    mode: Literal["auto", "manual"] = "auto"
    password: str = ""
    server: Server = Server()


class Required(msgspec.Struct, frozen=True, kw_only=True):
    backend: str


VARIABLES = {
    "DEMO_NAME": "name",
    "PORT": "server.port",
    "WORKERS": "server.workers",
    "ORIGINS": "server.origins",
    "DEMO_PASSWORD": "password",
}


def read(env: dict[str, str] | None = None, **kwargs: object) -> Demo:
    return read_settings(Demo, env or {}, VARIABLES, **kwargs)  # type: ignore[arg-type]


def error(env: dict[str, str] | None = None, **kwargs: object) -> str:
    with pytest.raises(SettingsError) as caught:
        read(env, **kwargs)
    return str(caught.value)


def test_defaults_file_environment_then_flags(tmp_path):
    assert read() == Demo()
    config = tmp_path / "demo.toml"
    config.write_text('name = "from file"\nshare = 0.5\n[server]\nport = 9000\nworkers = 2\n')
    settings = read(
        {"PORT": "9100", "DEMO_NAME": ""},  # an empty variable is unset
        file=config,
        overrides={"--workers": ("server.workers", 4), "--mode": ("mode", None)},
    )
    assert settings.name == "from file"
    assert settings.share == 0.5
    assert settings.server.port == 9100
    assert settings.server.workers == 4
    assert settings.mode == "auto", "a flag that was not given (None) changes nothing"


def test_a_variable_for_a_list_is_comma_separated():
    assert read({"ORIGINS": "https://a.example, https://b.example,"}).server.origins == (
        "https://a.example",
        "https://b.example",
    )


def test_a_non_integer_variable_is_named_with_its_fix():
    assert error({"PORT": "eighty"}) == (
        "PORT: expected an integer >= 1 and <= 65535, got 'eighty'. "
        "Fix PORT in the environment, or unset it for the default (8080)."
    )


def test_a_value_out_of_range_in_the_file_names_its_key_and_file(tmp_path):
    config = tmp_path / "demo.toml"
    config.write_text("share = 1.5\n")
    assert error(file=config) == (
        f"{config}: `share`: expected a number >= 0 and < 1, got 1.5. "
        f"Fix `share` in {config}, or remove it for the default (0.2)."
    )
    config.write_text('[server]\nworkers = "many"\n')
    assert error(file=config).startswith(
        f"{config}: `server.workers`: expected an integer >= 1, got 'many'. "
        f"Fix `workers` under [server] in {config}"
    )


def test_a_value_out_of_range_from_a_flag_names_the_flag():
    assert error(overrides={"--workers": ("server.workers", 0)}) == (
        "--workers: expected an integer >= 1, got 0. Fix --workers, or leave it out for the "
        "default (1)."
    )


def test_an_unknown_key_in_the_file_is_named_with_the_closest_known_one(tmp_path):
    config = tmp_path / "demo.toml"
    config.write_text("[server]\nprot = 9000\n")
    assert error(file=config) == (
        f"{config}: `server.prot` is not a setting; did you mean `port`? Fix it in {config}: "
        "[server] takes port, workers, origins."
    )
    config.write_text("[database]\nurl = 'x'\n")
    message = error(file=config)
    assert message.startswith(f"{config}: `database` is not a setting.")
    assert "the settings are name, share, mode, password, server." in message


def test_a_wrong_choice_lists_the_choices(tmp_path):
    config = tmp_path / "demo.toml"
    config.write_text('mode = "sometimes"\n')
    assert "`mode`: expected one of 'auto' or 'manual', got 'sometimes'." in error(file=config)


def test_a_missing_variable_says_to_set_it():
    with pytest.raises(SettingsError) as caught:
        read_settings(Required, {}, {"BACKEND_URI": "backend"})
    assert str(caught.value) == "BACKEND_URI is not set and has no default: export BACKEND_URI=…"


def test_a_problem_the_part_finds_is_named_like_the_others():
    def no_privileged_port(s: Demo) -> Iterator[Problem]:
        if s.server.port < 1024:
            yield Problem("server.port", "a port of 1024 or more (no root needed)")

    with pytest.raises(SettingsError) as caught:
        read_settings(Demo, {"PORT": "80"}, VARIABLES, check=no_privileged_port)
    assert str(caught.value) == (
        "PORT: expected a port of 1024 or more (no root needed), got '80'. "
        "Fix PORT in the environment, or unset it for the default (8080)."
    )


def test_a_secret_is_never_repeated():
    def refuse(s: Demo) -> Iterator[Problem]:
        yield Problem("password", "a password of 12 characters or more")

    with pytest.raises(SettingsError) as caught:
        read_settings(Demo, {"DEMO_PASSWORD": "hunter2"}, VARIABLES, check=refuse)
    assert "hunter2" not in str(caught.value)
    assert str(caught.value).startswith("DEMO_PASSWORD: expected a password of 12 characters")


def test_a_missing_or_broken_file_is_named(tmp_path):
    assert error(file=tmp_path / "absent.toml") == (
        f"config file {tmp_path / 'absent.toml'} does not exist"
    )
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    assert error(file=broken).startswith(f"config file {broken} is not valid TOML: ")
