"""Tool protocol and registry.

A tool is a class with a `name`, a `description`, a pydantic `Args` model (its JSON schema is
what the policy sees) and `run(args, ctx) -> str`. Recoverable failures raise `ToolError`; the
loop turns them into error observations, never ending the episode.

    @register_tool
    class Todo(Tool):
        name = "todo"
        ...
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from deepresearch.errors import ToolError
from deepresearch.registry import Registry

if TYPE_CHECKING:
    from deepresearch.config import AgentConfig
    from deepresearch.search.backend import SearchBackend


class ToolArgs(BaseModel):
    """Base for tool argument models: unknown arguments are an error the agent sees."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class EpisodeContext:
    """Per-episode state shared by the tools of one episode."""

    workspace: Path  # the only writable directory; the shell sees it as /workspace
    agent: "AgentConfig"
    search: "SearchBackend | None" = None
    opened_docs: list[str] = field(default_factory=list)  # in order of first opening
    state: dict[str, Any] = field(default_factory=dict)  # per-tool state, keyed by tool name
    _closers: list[Any] = field(default_factory=list)

    def note_opened(self, doc_id: str) -> None:
        if doc_id not in self.opened_docs:
            self.opened_docs.append(doc_id)

    def on_close(self, fn) -> None:
        self._closers.append(fn)

    def close(self) -> None:
        while self._closers:
            fn = self._closers.pop()
            try:
                fn()
            except Exception:  # noqa: BLE001 - cleanup must not mask the episode's result
                pass


class Tool(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    Args: ClassVar[type[ToolArgs]]

    @classmethod
    def schema(cls) -> dict[str, Any]:
        """OpenAI/Qwen function schema: {"type": "function", "function": {name, description, parameters}}.

        The parameters are the `Args` model's JSON schema without what only pydantic needs (titles,
        `null` alternatives of optional fields, `None` defaults): every episode's prompt carries it.
        """
        return {
            "type": "function",
            "function": {"name": cls.name, "description": cls.description, "parameters": compact_schema(cls.Args)},
        }

    def __call__(self, arguments: dict[str, Any], ctx: EpisodeContext) -> str:
        try:
            args = self.Args.model_validate(arguments)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(arguments)'}: {err['msg']}" for err in e.errors()
            )
            raise ToolError(f"invalid arguments for {self.name}: {problems}") from None
        return self.run(args, ctx)

    @abstractmethod
    def run(self, args: Any, ctx: EpisodeContext) -> str: ...


def compact_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A pydantic model's JSON schema as a model should read it: the same types, constraints and
    descriptions, without titles, `anyOf [X, null]` (optional is what `required` already says) and
    `default: null`."""

    def simplify(node: Any) -> Any:
        if isinstance(node, list):
            return [simplify(x) for x in node]
        if not isinstance(node, dict):
            return node
        node = {k: v for k, v in node.items() if k not in ("title", "additionalProperties")}
        if "default" in node and node["default"] is None:
            del node["default"]
        alts = node.get("anyOf")
        if isinstance(alts, list) and len(alts) == 2 and {"type": "null"} in alts:
            (kept,) = [a for a in alts if a != {"type": "null"}]
            node = {**{k: v for k, v in node.items() if k != "anyOf"}, **kept}
        return {k: simplify(v) for k, v in node.items()}

    return simplify(model.model_json_schema())


TOOLS: Registry[type[Tool]] = Registry(
    "tool",
    plugins=tuple(f"deepresearch.agent.tools.{m}" for m in ("file", "shell", "todo", "web")),  # the built-ins
    error=ToolError,
)


def register_tool(cls: type[Tool]) -> type[Tool]:
    """Class decorator adding a tool to the registry under `cls.name`; refuses duplicate names."""
    return TOOLS.register(cls.name)(cls)


def get_tool(name: str) -> type[Tool]:
    """Look up a tool class; the error lists the valid names."""
    return TOOLS.get(name)


def all_tools() -> dict[str, type[Tool]]:
    """Every registered tool, built-ins included."""
    return dict(TOOLS.items())


def dumps_observation(obj: Any) -> str:
    """Tool outputs are compact, deterministic JSON."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)
