"""The DeepSpeed engine of every training stage: its config, and the engine around a model.

    ds_config = make_deepspeed_config(cfg.training.sft, world_size=2, on_gpu=False)
    engine = init_engine(model, cfg.training.sft)         # joins/creates the process group first
    set_lr(engine, lr_at(step, cfg.training.sft))          # the loop owns the schedule

Choices, and why:
- ZeRO stage, micro batch, gradient accumulation and clipping come from `TrainStageConfig`.
- bf16 on GPU when the config asks for it; fp32 on CPU, whatever the config says (DeepSpeed's CPU
  accelerator trains in fp32 here, and the tiny CPU runs are about correctness, not speed).
- The optimizer is AdamW built by DeepSpeed from the config with `torch_adam: true`, i.e.
  `torch.optim.AdamW`: no JIT-compiled op (on CPU, DeepSpeed's own Adam is a C++ op built on first
  use, about 4 minutes here; on GPU FusedAdam needs nvcc in the image), the optimizer state is a plain
  torch state dict, and ZeRO 1-3 support it. Weight decay applies to matrices only (not to norms or biases).
- No DeepSpeed LR scheduler: the loop sets the rate of every step from `schedule.lr_at`, so a resumed
  run follows exactly the rates of an uninterrupted one.

deepspeed and torch are imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deepresearch.config import TrainStageConfig
from deepresearch.training.distributed import init_distributed, on_gpu

if TYPE_CHECKING:
    import torch
    from deepspeed import DeepSpeedEngine

ADAM_BETAS = (0.9, 0.95)  # the usual LLM pre-training betas (GPT-3, Llama, Qwen)
ADAM_EPS = 1e-8
NEVER_PRINT = 2**31 - 1  # DeepSpeed's own step logging stays off; the loop reports progress


def make_deepspeed_config(cfg: TrainStageConfig, world_size: int, on_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed config dict of one training stage.

    Args:
        cfg: the stage config.
        world_size: data-parallel processes (nnodes * nproc_per_node for a full job).
        on_gpu: CUDA is available (bf16 follows `cfg.bf16` on GPU; always fp32 on CPU).
    Returns:
        A dict for `deepspeed.initialize(config=...)`.
    Raises:
        ValueError: world_size < 1.
    """
    if world_size < 1:
        raise ValueError(f"make_deepspeed_config: world_size must be >= 1, got {world_size}")
    bf16 = bool(cfg.bf16 and on_gpu)
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.zero_stage >= 2:
        # contiguous buffers + reduce-scatter: the standard ZeRO-2/3 layout; no overlap on CPU (gloo is synchronous)
        zero.update({"contiguous_gradients": True, "reduce_scatter": True, "overlap_comm": on_gpu})
    if cfg.zero_stage == 3:
        # gather the full 16-bit weights when saving, so the HF export needs no zero_to_fp32 pass
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum_steps * world_size,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": cfg.lr,  # overwritten before every step by the loop
                "betas": list(ADAM_BETAS),
                "eps": ADAM_EPS,
                "weight_decay": cfg.weight_decay,
                "torch_adam": True,
            },
        },
        "steps_per_print": NEVER_PRINT,
        "wall_clock_breakdown": False,
    }


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: decay on matrices (ndim >= 2), none on norms and biases.

    Args:
        model: the module to train (frozen parameters are left out).
        weight_decay: the decay of the first group.
    Returns:
        Two groups (the empty one dropped) in a deterministic order.
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def init_engine(model: torch.nn.Module, cfg: TrainStageConfig) -> DeepSpeedEngine:
    """Wrap `model` in a DeepSpeed engine for `cfg` (the process group is joined or created first).

    On GPU the module is moved to this rank's device by DeepSpeed; on CPU it stays where it is.
    The engine trains `model` in place: after training (ZeRO 0-2) `model` holds the new weights.

    Args:
        model: a torch module (a transformers model for the HF export).
        cfg: the stage config.
    Returns:
        The DeepSpeedEngine.
    """
    env = init_distributed()  # first: it quiets deepspeed's import
    import deepspeed

    ds_config = make_deepspeed_config(cfg, world_size=env.world_size, on_gpu=on_gpu())
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=param_groups(model, cfg.weight_decay), config=ds_config
    )
    return engine


def set_lr(engine: DeepSpeedEngine, lr: float) -> None:
    """Set the learning rate of every parameter group for the next optimizer step."""
    for group in engine.optimizer.param_groups:
        group["lr"] = lr
