"""Exception types shared across the library. Each message says what was wrong, where, and what to do."""


class DeepResearchError(Exception):
    """Base class for every error this project raises on purpose."""


class ConfigError(DeepResearchError):
    """A configuration file or override is malformed (names the file and the field)."""


class WorldError(DeepResearchError):
    """A world directory is missing, incomplete or of an unknown schema version."""


class ToolError(DeepResearchError):
    """A tool call failed in a way the agent can recover from; becomes an error observation."""


class DataQualityError(DeepResearchError):
    """An expectation suite failed; carries the failed expectations so the workflow can stop."""

    def __init__(self, message: str, failed: list[str] | None = None):
        super().__init__(message)
        self.failed = failed or []


class TrackingError(DeepResearchError):
    """The MLflow tracking store is unreachable or inconsistent (names the URI and what to do)."""


class StaleCacheError(DeepResearchError):
    """A cached stage output points at a directory or MLflow run that no longer exists (names the entry)."""
