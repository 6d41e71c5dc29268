"""The `todo` tool: the agent's explicit plan, kept per episode.

Planning is one of the atomic capabilities the recipe trains, so the plan is a real, stateful
object rather than free text: the agent adds steps, marks them in progress / done / blocked with
an optional note, and removes steps it no longer needs. A call answers with what it changed and
where the plan stands (`list` shows the whole plan), not with the whole plan again: the steps are
already in the context, in the call that added them.

    added steps 1-2; 0/2 done, next: 1
    step 1: done (1998, per D0000042); 1/2 done, next: 2

    todo({"action": "add", "steps": ["find the founding year", "verify on a second source"]})
    todo({"action": "update", "id": 1, "status": "done", "note": "1998, per D0000042"})

State lives in `ctx.state["todo"]` as {"next_id": int, "steps": [{"id", "text", "status", "note"}]}.
Ids start at 1 and are never reused, so a removed step's id cannot silently point at another step.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from deepresearch.agent.tools.base import EpisodeContext, Tool, ToolArgs, register_tool
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
        description="what to do"
    )
    steps: list[str] | None = Field(None, description="for add")
    id: int | None = Field(None, description="for update/remove")
    status: Status | None = Field(
        None, description="for update"
    )
    note: str | None = Field(None, description="optional: the finding or blocker")


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
        "Keep a plan: add (steps), update (id, status, note), remove (id), list."
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
            first = plan["next_id"]
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
            last = plan["next_id"] - 1
            changed = f"added step {first}" if first == last else f"added steps {first}-{last}"
        elif args.action == "update":
            if args.id is None:
                raise ToolError('todo update needs "id" (the step to update)')
            if args.status is None:
                raise ToolError('todo update needs "status": one of pending, in_progress, done, blocked')
            step = _find(plan, args.id)
            step["status"] = args.status
            if args.note is not None:
                step["note"] = args.note or None  # an empty note clears it
            changed = f"step {step['id']}: {step['status']}" + (f" ({step['note']})" if step["note"] else "")
        elif args.action == "remove":
            if args.id is None:
                raise ToolError('todo remove needs "id" (the step to remove)')
            plan["steps"].remove(_find(plan, args.id))
            changed = f"removed step {args.id}"
        else:  # list
            return render_plan(plan["steps"])
        return f"{changed}; {_progress(plan['steps'])}"


def _progress(steps: list[dict[str, Any]]) -> str:
    """`k/n done, next: i` — how far the plan is, and the first step still open."""
    done = sum(s["status"] == "done" for s in steps)
    open_ = [s["id"] for s in steps if s["status"] in ("pending", "in_progress")]
    return f"{done}/{len(steps)} done" + (f", next: {open_[0]}" if open_ else "")


def render_plan(steps: list[dict[str, Any]]) -> str:
    """The whole plan, a line per step: `1 [done] find the founding year (note)`."""
    if not steps:
        return "the plan is empty"
    return "\n".join(
        f"{s['id']} [{s['status']}] {s['text']}" + (f" ({s['note']})" if s["note"] else "") for s in steps
    )
