"""Rubric judge: (report, rubric item) → satisfied / partially / not, and labels → RL reward.

    data.py    controlled-quality reports with ground-truth labels, split by task, jsonl I/O
    reward.py  the asymmetric binary label → reward mapping (pure functions)
    model.py   the Qwen2 sequence-classifier judge: encoding, loss hook, predict, metrics, `Judge`

Import the submodules; this package imports nothing heavy.
"""
