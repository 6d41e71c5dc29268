"""Data synthesis by atomic capability: deep search, deep research, expert trajectories."""
