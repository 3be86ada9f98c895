"""A second strategy kind beside Carver's forecast-to-position system: stop-and-target trading.

A position is opened on an entry signal (EMA crossover, channel breakout, or later an external
forecast), sized by a per-trade rule (fixed fraction of capital at risk to the stop, volatility
target, or fractional Kelly), and closed by a stop (fixed, ATR multiple or trailing), a take-profit,
a time stop or the signal reversing. Daily bars only. See ``docs/strategies.md``.

=============  ====================================================================
module         job
=============  ====================================================================
``config``     the strategy's configuration (pydantic), read from ``PipelineConfig.strategy``
``atr``        true range and Wilder's average true range over a wide panel
``entries``    entry signal states (+1 long, -1 short, 0 none) from the entry rule
``sizing``     contracts per entry: fixed fraction, vol target, Kelly
``backtest``   the path-dependent simulation, its trades and its summary statistics
``run``        a configured run: bars from the source, quality rules, backtest, results folder
=============  ====================================================================

No Dagster here (``pyproject.toml`` ``[tool.importlinter]``): the ``backtest`` command of
:mod:`pipeline.cli.backtest` calls :func:`pipeline.strategies.run.run_strategy_backtest`.
"""
