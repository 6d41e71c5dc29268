"""Inference engines shared by the agent's HF policy, RL rollouts and evaluation.

    engine.py      generation engines (transformers on CPU, vLLM on GPU) returning sampled ids + log π_θ;
                   the engine registry (`make_engine`) and `EngineOptions`
    batching.py    one engine shared by concurrent episodes, their turns decoded in batches

A package of its own so that policies (agent/), rollouts (rl/) and evaluation depend on it and it
depends on none of them. torch, transformers and vllm are imported inside the functions that use them.
"""
