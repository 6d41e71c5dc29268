"""Policy protocol and registry.

A policy turns the conversation so far into the next assistant turn (raw text in the Hermes
tool-call format). Factories share one signature: `(cfg: AgentConfig, world: World | None) -> Policy`.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Protocol, Union

from deepresearch.registry import Registry

if TYPE_CHECKING:
    from deepresearch.agent.schema import Message
    from deepresearch.config import AgentConfig
    from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask
    from deepresearch.world.schema import World

    AgentTask = Union[DeepSearchTask, ResearchTask, str]


class Policy(Protocol):
    name: str

    def reset(self, task: "AgentTask", *, seed: str = "") -> None:
        """Start a new episode for `task` (a synthesized task or a free-form prompt)."""

    def act(self, messages: list["Message"], tools: list[dict[str, Any]]) -> str:
        """Return the next assistant turn as raw text."""


class PolicyName(str, Enum):
    scripted = "scripted"
    openai = "openai"
    hf = "hf"


PolicyFactory = Callable[["AgentConfig", "World | None"], Policy]
POLICIES: Registry[PolicyFactory] = Registry(
    "policy", PolicyName, plugins=tuple(f"deepresearch.agent.policies.{m}" for m in ("hf", "openai_compat", "scripted"))
)


def register_policy(name: PolicyName) -> Callable[[PolicyFactory], PolicyFactory]:
    """Decorator registering a policy factory; refuses duplicates."""
    return POLICIES.register(name)


def make_policy(name: str, cfg: "AgentConfig", world: "World | None" = None) -> Policy:
    """Build a policy by name; the error lists valid names."""
    return POLICIES.get(name)(cfg, world)
