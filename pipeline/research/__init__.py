"""Research: backtests, analytics, metrics and statistics, walk-forward, parameter stability, results folders and reports."""
