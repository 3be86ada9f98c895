"""Data quality: validation rules and quarantine, Great Expectations suites, stale and non-session checks."""
