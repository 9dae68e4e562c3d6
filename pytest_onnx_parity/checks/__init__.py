"""The checks of a parity run: one module per check, each a function from a run's context to a CheckResult."""
