"""Config loading: every shipped config validates; bad input names the file and field."""

from pathlib import Path

import pytest

from deepresearch.config import REPO_ROOT, PipelineConfig, load_config
from deepresearch.errors import ConfigError

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_file_validates(path: Path):
    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)
    assert len(cfg.hash) == 12


def test_overrides_apply_and_change_the_hash():
    base = load_config("configs/tiny.yaml")
    cfg = load_config("configs/tiny.yaml", ["synthesis.n_deep_search=3", "agent.budget.max_turns=5"])
    assert cfg.synthesis.n_deep_search == 3 and cfg.agent.budget.max_turns == 5
    assert cfg.hash != base.hash
    assert load_config("configs/tiny.yaml").hash == base.hash  # stable across loads


def test_tracking_does_not_change_the_hash():
    a = load_config("configs/tiny.yaml")
    b = load_config("configs/tiny.yaml", ["tracking.uri=sqlite:///elsewhere.db"])
    assert a.hash == b.hash


def test_unknown_key_is_rejected_with_file_and_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("world:\n  seed: 1\n  entites_per_type: 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "world.entites_per_type" in str(e.value) and "unknown key" in str(e.value)


def test_bad_value_is_rejected(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("synthesis:\n  min_hops: 4\n  max_hops: 2\n")
    with pytest.raises(ConfigError, match="min_hops"):
        load_config(p)
    with pytest.raises(ConfigError, match="quality.expectations.min_citation_valid_rate"):
        load_config("configs/tiny.yaml", ["quality.expectations.min_citation_valid_rate=2"])


def test_malformed_yaml_and_missing_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("world: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not of the form"):
        load_config("configs/tiny.yaml", ["world.seed"])


def test_empty_config_and_duplicate_keys_are_errors(tmp_path):
    empty = tmp_path / "empty.yaml"
    for text in ("", "# only a comment\n"):
        empty.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_config(empty)
        assert str(e.value) == (
            f"config file {empty} is empty; give the settings to change (e.g. start from configs/tiny.yaml), "
            "or pass --config configs/tiny.yaml"
        )
    dup = tmp_path / "dup.yaml"
    dup.write_text("synthesis:\n  n_deep_search: 8\nworld:\n  seed: 1\nsynthesis:\n  n_deep_research: 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(dup)
    assert str(e.value) == (
        f"config file {dup}: key 'synthesis' appears twice in one mapping (lines 1 and 5); "
        "keep one (YAML would silently use the last)"
    )
    dup.write_text("world:\n  seed: 1\n  seed: 2\n")
    with pytest.raises(ConfigError, match=r"key 'seed' appears twice in one mapping \(lines 2 and 3\)"):
        load_config(dup)
    # merge keys are not duplicates
    merged = tmp_path / "merged.yaml"
    merged.write_text("x: &b {seed: 1}\nworld:\n  <<: *b\n  seed: 2\n")
    with pytest.raises(ConfigError, match="unknown key"):  # only because `x` is not a section
        load_config(merged)


def test_frozen_sections():
    cfg = load_config("configs/tiny.yaml")
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        cfg.world.seed = 3  # type: ignore[misc]


def test_json_round_trip():
    cfg = load_config("configs/tiny.yaml")
    assert PipelineConfig.from_json(cfg.to_json()) == cfg
