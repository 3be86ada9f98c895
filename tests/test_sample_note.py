"""The results folder says which parameters were fixed by the configuration and which were estimated."""

from pathlib import Path

from assets.research import _sample_note
from pipeline.config import load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pysystemtrade_ch15.yaml"


def test_the_default_system_estimates_weights_idm_and_fdm():
    note = _sample_note(load_config())
    assert "instrument weights (erc), IDM, FDM estimated at each session from past data only" in note
    assert "fixed by the configuration" not in note


def test_carvers_chapter_15_system_says_its_weights_idm_and_fdm_are_fixed():
    note = _sample_note(load_config(str(EXAMPLE)))
    assert "instrument weights (fixed), IDM 1.89, FDM 1.31 fixed by the configuration" in note
    assert "estimated at each session" not in note
