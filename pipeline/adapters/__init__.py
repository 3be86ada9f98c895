"""Adapters to the outside world (kernel imports only): bar sources, the IB wire (broker, contracts, pacing, fake gateway), pysystemtrade data files, alert delivery."""
