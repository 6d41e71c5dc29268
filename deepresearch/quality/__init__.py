"""Quality gates: trajectory filters and great-expectations suites."""
