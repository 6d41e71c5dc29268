"""The `todo` tool: the agent's explicit plan, kept per episode.

Planning is one of the atomic capabilities the recipe trains, so the plan is a real, stateful
object rather than free text: the agent adds steps, marks them in progress / done / blocked with
an optional note, and removes steps it no longer needs. Every call answers with the whole plan,
so the latest state is always the last todo observation in the context.

    todo({"action": "add", "steps": ["find the founding year", "verify on a second source"]})
    todo({"action": "update", "id": 1, "status": "done", "note": "1998, per D0000042"})

State lives in `ctx.state["todo"]` as {"next_id": int, "steps": [{"id", "text", "status", "note"}]}.
Ids start at 1 and are never reused, so a removed step's id cannot silently point at another step.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from deepresearch.agent.tools.base import EpisodeContext, Tool, ToolArgs, dumps_observation, register_tool
from deepresearch.errors import ToolError

Status = Literal["pending", "in_progress", "done", "blocked"]

# The arguments each action takes besides `action`; anything else is refused so the agent
# learns the right call shape instead of having arguments silently ignored.
_ALLOWED: dict[str, set[str]] = {
    "add": {"steps", "status", "note"},
    "update": {"id", "status", "note"},
    "remove": {"id"},
    "list": set(),
}


class TodoArgs(ToolArgs):
    action: Literal["add", "update", "list", "remove"] = Field(
        description="add: append steps; update: set a step's status (and note); remove: delete a step; "
        "list: show the plan"
    )
    steps: list[str] | None = Field(None, description="for add: the new steps, in order")
    id: int | None = Field(None, description="for update/remove: the step id shown by the plan")
    status: Status | None = Field(
        None, description="for update (required) or add (initial status, default pending)"
    )
    note: str | None = Field(None, description="optional note on the step (e.g. the finding or blocker)")


def _plan(ctx: EpisodeContext) -> dict[str, Any]:
    return ctx.state.setdefault("todo", {"next_id": 1, "steps": []})


def _find(plan: dict[str, Any], step_id: int) -> dict[str, Any]:
    for step in plan["steps"]:
        if step["id"] == step_id:
            return step
    ids = ", ".join(str(s["id"]) for s in plan["steps"]) or "none (the plan is empty)"
    raise ToolError(f"todo: no step with id {step_id}; existing ids: {ids}")


@register_tool
class Todo(Tool):
    """A per-episode plan of steps with statuses; every call returns the whole plan."""

    name = "todo"
    description = (
        "Keep a plan for this task. Actions: add (steps=[...]), update (id, status in "
        "pending|in_progress|done|blocked, optional note), remove (id), list. "
        "Returns the whole plan after the action."
    )
    Args = TodoArgs

    def run(self, args: TodoArgs, ctx: EpisodeContext) -> str:
        """Apply one action to the plan in `ctx.state["todo"]` and return the plan as JSON."""
        given = {k for k in ("steps", "id", "status", "note") if getattr(args, k) is not None}
        extra = given - _ALLOWED[args.action]
        if extra:
            takes = ", ".join(sorted(_ALLOWED[args.action])) or "no other arguments"
            raise ToolError(
                f"todo action {args.action!r} does not take {', '.join(sorted(extra))} (it takes: {takes})"
            )
        plan = _plan(ctx)
        if args.action == "add":
            steps = [s.strip() for s in (args.steps or [])]
            if not steps or not all(steps):
                raise ToolError('todo add needs "steps": a non-empty list of non-empty step descriptions')
            for text in steps:
                plan["steps"].append(
                    {
                        "id": plan["next_id"],
                        "text": text,
                        "status": args.status or "pending",
                        "note": args.note,
                    }
                )
                plan["next_id"] += 1
        elif args.action == "update":
            if args.id is None:
                raise ToolError('todo update needs "id" (the step to update)')
            if args.status is None:
                raise ToolError('todo update needs "status": one of pending, in_progress, done, blocked')
            step = _find(plan, args.id)
            step["status"] = args.status
            if args.note is not None:
                step["note"] = args.note or None  # an empty note clears it
        elif args.action == "remove":
            if args.id is None:
                raise ToolError('todo remove needs "id" (the step to remove)')
            plan["steps"].remove(_find(plan, args.id))
        return dumps_observation({"steps": [dict(s) for s in plan["steps"]]})
