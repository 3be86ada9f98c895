"""Storage: the Parquet lake, the DuckDB warehouse views, the ledger's tables and the state paths."""
