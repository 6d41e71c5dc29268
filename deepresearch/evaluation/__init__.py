"""Evaluation of checkpoints on held-out tasks.

    compliance.py  ResearchRubrics compliance (ground-truth labeler or a trained judge)
    accuracy.py    deep-search exact match and token F1 (SQuAD normalization, answer + aliases)
    elo.py         pairwise Elo between checkpoints with bootstrap confidence intervals
    cost.py        tokens, tool calls and wall time per report
    report.py      markdown + HTML (Flyte Deck) report with PNG plots

Import the submodules; this package imports nothing heavy.
"""
