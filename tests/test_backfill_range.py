"""A backfill's range against the configuration given with --config: a start before its
``history_start`` is refused in one line before any run; sessions the source does not hold inside
its history fail once, without retries, saying what to do."""

from __future__ import annotations

from pipeline.cli.app import main
from tests.conftest import write_config


def test_a_backfill_before_history_start_of_the_config_file_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    config = write_config(tmp_path, symbols=["AAPL", "KO"], history_start="1985-01-02")
    assert main(["backfill", "1984-01-02", "1984-01-10", "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"error: backfill starts on 1984-01-02, before history_start 1985-01-02 of the configuration "
                   f"({config}): start on or after it, or set history_start earlier")
    assert not (tmp_path / "dagster_home" / "history").exists()  # no run was started


def test_sessions_the_source_does_not_hold_fail_once_without_retries(tmp_path, monkeypatch, capsys):
    # history_start 1985 from the --config file moves the partitions (the backfill of 1986 runs),
    # but the bundled sample starts decades later: deterministic, so no retry.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    config = write_config(tmp_path, symbols=["AAPL", "KO"], history_start="1985-01-02")
    assert main(["backfill", "1986-01-02", "1986-01-10", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "has no bars for 7 session(s) of this run (1986-01-02, 1986-01-03" in err
    assert "asking again cannot help" in err
    assert "max_retries" not in err and "STEP_UP_FOR_RETRY" not in err
    assert err.count("STEP_FAILURE") == 1
