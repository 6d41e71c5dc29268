"""Evaluation of checkpoints on held-out tasks.

    compliance.py  ResearchRubrics compliance (ground-truth labeler or a trained judge)
    accuracy.py    deep-search exact match and token F1 (SQuAD normalization, answer + aliases)
    cost.py        tokens, tool calls and wall time per report
    intervals.py   percentile bootstrap over tasks: a mean, a paired difference (Elo resamples with it too)
    metrics.py     per-episode records → per-checkpoint means with intervals, paired differences
    elo.py         pairwise Elo between checkpoints with bootstrap confidence intervals
    probe.py       teacher-forced next-action probe on held-out expert trajectories
    report.py      markdown + HTML (Flyte Deck) report with PNG plots; the printed tables
    run.py         the evaluation: episodes, scores, intervals, probe, report, MLflow
    promotion.py   the evaluation stage: the champion on the same tasks, registration, promotion

Import the submodules; this package imports nothing heavy.
"""
