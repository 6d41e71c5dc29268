"""Compile-time infrastructure: which config's `infra` section sizes the tasks of a workflow.

Tasks (the Ray head and workers of `tasks.model.ppo`, the elastic shape of `tasks.train`) and workflows
(each node's `with_overrides(**overrides(family))`) both read it; neither imports the other for it.

Flyte fixes a node's resources, accelerator and task config when the workflow is compiled
(registration), before any input is known, so the config that sizes the tasks is read at import:

    1. $DEEPRESEARCH_CONFIG, if set;
    2. else the value of `--config` on the command line (so `pyflyte run --remote workflows/full.py
       full --config configs/small.yaml` sizes the tasks for small.yaml and runs small.yaml);
    3. else configs/tiny.yaml.

Local executions ignore all of it.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache

from deepresearch.config import InfraConfig, TaskResources, load_config

ENV = "DEEPRESEARCH_CONFIG"


def compile_config_path(argv: list[str] | None = None) -> str:
    """The config file whose `infra` section sizes the workflow's tasks (see module docstring)."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return "configs/tiny.yaml"


@lru_cache(maxsize=4)
def infra(path: str | None = None) -> InfraConfig:
    return load_config(path or compile_config_path()).infra


def overrides(family: str, path: str | None = None) -> dict:
    """`with_overrides` keyword arguments for a task family of the compile-time config."""
    return resource_overrides(getattr(infra(path), family), family)


def resource_overrides(res: TaskResources, family: str = "task") -> dict:
    """Requests, GPU limits and accelerator as `with_overrides` keyword arguments."""
    from flytekit import Resources
    from flytekit.extras import accelerators

    out: dict = {"requests": Resources(cpu=res.cpu, mem=res.mem, gpu=str(res.gpu) if res.gpu else None)}
    if res.gpu:
        out["limits"] = Resources(gpu=str(res.gpu))
    if res.accelerator:
        try:
            out["accelerator"] = getattr(accelerators, res.accelerator)
        except AttributeError:
            valid = sorted(n for n in dir(accelerators) if n.isupper() and not n.startswith("_"))
            raise ValueError(f"infra.{family}.accelerator {res.accelerator!r} is not one of {valid}") from None
    return out
