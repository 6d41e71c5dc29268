"""One small registry for every family of variants: tools, policies, search backends, generation
engines, advantage estimators.

    ENGINES: Registry[EngineFactory] = Registry("generation engine", EngineName)

    @ENGINES.register(EngineName.transformers)
    def _transformers(model_dir, options): ...

    ENGINES.get("vllm")        # the factory; a miss raises naming the valid ones

A registry refuses a second registration under a name (naming what holds it) and, when it has an
Enum of names, any name outside the Enum: adding a variant means adding it to the Enum first, so
configs validate against the same list. `plugins` are modules imported on the first lookup, whose
import registers their variants (the built-in tools, policies and search backends live in modules
that import the registry, not the other way round).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import Enum
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """name → implementation (a read-only Mapping once registered)."""

    def __init__(
        self,
        kind: str,
        names: type[Enum] | None = None,
        *,
        plugins: Sequence[str] = (),
        error: type[Exception] = ValueError,
    ):
        """
        Args:
            kind: what the entries are, for messages ("tool", "search backend", ...).
            names: the Enum of valid names (str values); None: any string.
            plugins: modules to import before the first lookup (they register the built-in entries).
            error: the exception a lookup miss raises (its message lists the valid names).
        """
        self.kind, self.names, self.plugins, self.error = kind, names, tuple(plugins), error
        self._items: dict[str, T] = {}
        self._loaded = not plugins
        self._loading = False
        # Threads (a rollout actor's episodes, evaluation's) may make the first lookup together: the others
        # wait for the plugins, never see a half-filled registry (a prompt listing one tool of four)
        self._lock = threading.RLock()

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded or self._loading:  # _loading: a plugin's own lookup while it is imported
                return
            self._loading = True
            try:
                for module in self.plugins:
                    importlib.import_module(module)
                self._loaded = True
            finally:
                self._loading = False

    def valid(self) -> list[str]:
        """The registered names, in the Enum's order (sorted without one)."""
        self._load()
        if self.names is None:
            return sorted(self._items)
        return [m.value for m in self.names if m.value in self._items]

    def _key(self, name: str | Enum) -> str | None:
        if self.names is None:
            return name.value if isinstance(name, Enum) else str(name)
        try:
            return self.names(name).value
        except ValueError:
            return None

    def register(self, name: str | Enum) -> Callable[[T], T]:
        """Decorator adding an entry under `name`; refuses duplicates and names outside the Enum."""
        key = self._key(name)
        if key is None:
            members = ", ".join(m.value for m in self.names)  # type: ignore[union-attr]
            raise ValueError(
                f"{name!r} is not an {self.names.__name__} member; add it to the enum first (members: {members})"  # type: ignore[union-attr]
            )

        def deco(obj: T) -> T:
            if key in self._items:
                held = self._items[key]
                raise ValueError(
                    f"{self.kind} {key!r} is already registered by {getattr(held, '__qualname__', repr(held))}"
                )
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str | Enum) -> T:  # type: ignore[override]
        """The entry registered under `name`; `error` listing the valid names on a miss."""
        self._load()
        key = self._key(name)
        if key is None or key not in self._items:
            shown = name.value if isinstance(name, Enum) else name
            raise self.error(f"unknown {self.kind} {shown!r}; valid: {', '.join(self.valid())}")
        return self._items[key]

    def __getitem__(self, name: str | Enum) -> T:
        self._load()
        key = self._key(name)
        if key is None or key not in self._items:
            raise KeyError(name)
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._items))

    def __len__(self) -> int:
        self._load()
        return len(self._items)
