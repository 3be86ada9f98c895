"""The research API: the named functions exist, are documented, and docs/research_api.md runs."""

import importlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "research_api.md"
API = [
    "pipeline.signals.volatility.robust_vol",
    "pipeline.signals.rules.ewmac",
    "pipeline.signals.rules.breakout",
    "pipeline.signals.rules.carry",
    "pipeline.signals.forecasts.scale_and_cap",
    "pipeline.signals.forecasts.estimate_scalars",
    "pipeline.signals.combine.fdm",
    "pipeline.signals.combine.combine",
    "pipeline.portfolio.erc_weights",
    "pipeline.portfolio.idm",
    "pipeline.portfolio.position_sizes",
    "pipeline.portfolio.buffer",
]


def _resolve(dotted: str):
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("name", API)
def test_every_api_function_documents_shapes_units_errors_and_source(name):
    doc = _resolve(name).__doc__ or ""
    assert "Parameters" in doc and "Returns" in doc and "Raises" in doc, name
    assert re.search(r"pst|pysystemtrade|ST ch\.|AFTS|carver\.md|Spinu", doc), f"{name}: no formula source"


@pytest.fixture(scope="module")
def doc_namespace():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - the document's own example
    return namespace


def test_the_documented_example_runs_and_gives_carver_shaped_numbers(doc_namespace):
    ns = doc_namespace
    combined, target, optimal = ns["combined"], ns["target"], ns["optimal"]
    assert combined.abs().max().max() <= 20.0
    # scalars estimated on these five stocks: capped forecasts average roughly |10|
    mean_abs = ns["capped"].abs().mean().mean()
    assert 5.0 < mean_abs < 15.0
    assert 1.0 <= ns["idm"] <= 2.5
    w = ns["instrument_weights"]
    corr = ns["returns"].corr().clip(lower=0.0)
    assert ns["idm"] == pytest.approx(1.0 / np.sqrt(w @ corr @ w), abs=1e-9)
    last = target.iloc[-1]
    assert (last == last.round()).all()  # whole shares
    inside = (last - optimal.iloc[-1]).abs() <= 0.1 * ns["average"].iloc[-1].abs() + 0.5
    assert inside.all()


def test_carry_wrapper_equals_the_carry_module():
    from pipeline.signals.carry import annualised_roll, carry_forecast
    from pipeline.signals.rules import carry

    index = pd.bdate_range("2024-01-01", periods=5, name="session")
    price = pd.DataFrame({"X": [100.0, 100.5, 101.0, 100.0, 99.0]}, index=index)
    carry_price = price - 1.0
    pc = pd.DataFrame({"X": [20240300] * 5}, index=index)
    cc = pd.DataFrame({"X": [20240600] * 5}, index=index)
    vol = pd.DataFrame({"X": [1.0] * 5}, index=index)
    expected = carry_forecast(annualised_roll(price, carry_price, pc, cc), vol)
    pd.testing.assert_frame_equal(carry(price, carry_price, pc, cc, vol), expected)
    # roll of 1 point per quarter = 4 a year; over annual vol 16 -> 0.25 SR units
    assert carry(price, carry_price, pc, cc, vol).iloc[0, 0] == pytest.approx(0.25, rel=0.01)
