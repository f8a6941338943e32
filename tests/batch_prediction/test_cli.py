"""The batch command run in a process that does other things (a test session, a notebook)."""

from __future__ import annotations

import logging

from batch_prediction import cli


def test_a_run_leaves_the_model_loaders_log_level_as_it_found_it(tmp_path, capsys):
    """A run quietens the loader's records (its one error line says why), for itself only:
    the service in the same process still warns when a model source fails."""
    loader_log = logging.getLogger("model_runtime.loader")
    before = loader_log.level
    code = cli.main(["--input", str(tmp_path / "missing.csv"), "--output", str(tmp_path / "out")])
    assert code == 1
    assert "missing.csv" in capsys.readouterr().err
    assert loader_log.level == before
    assert loader_log.isEnabledFor(logging.WARNING)
