"""The curated authority list: which domains exist, their tier and the authority score the ranker uses.

    reg = load_authority_registry()                 # registry/authority_domains.yaml by default
    reg.tier("registry.gov.example")                # Tier.high
    reg.authority("notes.blog.example")             # 0.25
    reg.domains_by_tier(Tier.medium)                # ["dailyledger.news.example", ...] in file order

A domain's authority is its tier's score unless the entry sets its own `authority`.
Malformed files raise `WorldError` naming the file and the offending field.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from deepresearch.errors import WorldError
from deepresearch.world.schema import Tier

AUTHORITY_SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AuthorityDomain(_Strict):
    """One curated domain."""

    domain: str = Field(min_length=1)
    tier: Tier
    kind: str = Field(min_length=1)  # government | academic | institutional | news | blog | forum | ...
    authority: float | None = Field(None, ge=0.0, le=1.0)  # overrides the tier's score when set


class AuthorityRegistry(_Strict):
    """The whole authority list; validated so every tier has a score and at least one domain."""

    schema_version: int
    tiers: dict[Tier, float]
    domains: list[AuthorityDomain]
    _lookup: dict[str, AuthorityDomain] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> AuthorityRegistry:
        if self.schema_version != AUTHORITY_SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is not supported (this code reads {AUTHORITY_SCHEMA_VERSION})"
            )
        missing = [t.value for t in Tier if t not in self.tiers]
        if missing:
            raise ValueError(f"tiers: no authority score for {missing}")
        for t, score in self.tiers.items():
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"tiers.{t.value}: authority {score} is outside [0, 1]")
        if not self.tiers[Tier.high] > self.tiers[Tier.medium] > self.tiers[Tier.low]:
            raise ValueError("tiers: authority must decrease strictly from high to medium to low")
        seen: set[str] = set()
        for i, d in enumerate(self.domains):
            if d.domain in seen:
                raise ValueError(f"domains.{i}: domain {d.domain!r} is listed twice")
            seen.add(d.domain)
        empty = [t.value for t in Tier if not any(d.tier == t for d in self.domains)]
        if empty:
            raise ValueError(f"domains: no domain in tier(s) {empty}; the world generator needs every tier")
        return self

    # ---- lookups -------------------------------------------------------------------------
    def entry(self, domain: str) -> AuthorityDomain | None:
        """The registry entry of `domain`, or None when it is not curated."""
        return self._by_domain().get(domain)

    def _require(self, domain: str) -> AuthorityDomain:
        e = self.entry(domain)
        if e is None:
            raise WorldError(
                f"domain {domain!r} is not in the authority registry; add it to registry/authority_domains.yaml "
                f"(known: {', '.join(sorted(self._by_domain()))})"
            )
        return e

    def authority(self, domain: str) -> float:
        """Authority score of a curated domain (raises WorldError for an unknown domain)."""
        e = self._require(domain)
        return e.authority if e.authority is not None else self.tiers[e.tier]

    def tier(self, domain: str) -> Tier:
        """Tier of a curated domain (raises WorldError for an unknown domain)."""
        return self._require(domain).tier

    def domains_by_tier(self, tier: Tier | str) -> list[str]:
        """Domains of one tier, in file order (the generator draws from this list, so order matters)."""
        t = Tier(tier)
        return [d.domain for d in self.domains if d.tier == t]

    def _by_domain(self) -> dict[str, AuthorityDomain]:
        # Built lazily: the model is frozen, so the map can never go stale.
        if self._lookup is None:
            self._lookup = {d.domain: d for d in self.domains}
        return self._lookup


def load_authority_registry(path: str | Path | None = None) -> AuthorityRegistry:
    """Load and validate the authority list.

    Args:
        path: YAML file; default `WorldConfig().authority_registry` resolved against the repo.
    Returns:
        The validated AuthorityRegistry.
    Raises:
        WorldError: missing file, malformed YAML, or a bad field (file and dotted field named).
    """
    from deepresearch.config import WorldConfig, resolve_repo_path

    p = resolve_repo_path(path if path is not None else WorldConfig().authority_registry)
    if not p.is_file():
        raise WorldError(
            f"authority registry not found: {p} (world.authority_registry points at a missing file)"
        )
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise WorldError(f"authority registry {p} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise WorldError(
            f"authority registry {p} must hold a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return AuthorityRegistry.model_validate(data)
    except ValidationError as err:
        lines = [f"invalid authority registry {p}:"]
        for e in err.errors():
            loc = ".".join(str(x) for x in e["loc"]) or "(root)"
            lines.append(f"  {loc}: {e['msg']}")
        raise WorldError("\n".join(lines)) from None
