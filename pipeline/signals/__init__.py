"""Signals: volatility, trading rules (EWMAC, breakout, carry), forecast scaling, forecast weights, FDM and combination, and the trading-cost view of rules (SR costs, speed limit)."""
