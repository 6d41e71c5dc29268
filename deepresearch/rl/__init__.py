"""Reinforcement learning for the research agent: PPO with a learned critic (GAE, γ = λ = 1).

    ppo.py      the math, as pure functions over (B, T) tensors; the advantage-estimator registry
    buffer.py   Episode (one agent rollout as tokens + action mask + log-probs) and ExperienceBatch
    value.py    the critic: the policy's backbone plus a scalar value head, saved as an HF directory
    engine.py   generation engines (transformers on CPU, vLLM on GPU) returning sampled ids + log π_θ
    rollout.py  Ray actors running the ReAct loop with the real tools; fault-tolerant `collect`
    weights.py  weight publication (one `ray.put`) and versioned push to the rollout actors
    learner.py  one PPO optimization step over an ExperienceBatch (plain torch; DeepSpeed wraps it)

Heavy frameworks (ray, transformers, vllm) are imported inside the functions that use them.
"""
