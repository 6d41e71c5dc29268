"""Reinforcement learning for the research agent: PPO with a learned critic (GAE, γ = λ = 1).

    ppo.py         the math, as pure functions over (B, T) tensors; the advantage-estimator registry
    buffer.py      Episode (one agent rollout as tokens + action mask + log-probs) and ExperienceBatch
    value.py       the critic: the policy's backbone plus a scalar value head, saved as an HF directory
    rollout.py     Ray actors each playing its share of a step's episodes concurrently; fault-tolerant `collect`
    weights.py     weight publication (one `ray.put`) and versioned push to the rollout actors
    tasks.py       the tasks a PPO step plays (seeded pools, held-out tasks removed) and their rewards
    experience.py  episodes + rewards → the PPO batch (critic values, reference log-probs, GAE)
    learner.py     the one PPO learner: the update over an ExperienceBatch, DeepSpeed or plain torch
    train.py       the stage driver `run_ppo`: rollout → reward → experience → update → sync, tracked

Rewards are defined with the judge (`deepresearch.judge.reward.score_trajectories`); the generation
engines rollouts sample from live in `deepresearch.generation`.
Heavy frameworks (ray, deepspeed, transformers, vllm) are imported inside the functions that use them.
"""
