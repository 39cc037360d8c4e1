"""Thin Prefect tasks: each wraps one musicrec function and passes paths, metrics and small records."""
