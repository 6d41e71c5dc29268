"""Catalogs in registry/: each validates; data-source checksums reproduce; images match the code."""

import pytest

from deepresearch.catalogs import load_data_sources, load_images, validate_all
from deepresearch.errors import ConfigError


def test_every_catalog_validates():
    counts = validate_all()
    assert all(n > 0 for n in counts.values()), counts


def test_synthetic_sources_reproduce_their_checksums(tmp_path):
    from deepresearch.config import load_config
    from deepresearch.io import dir_digest
    from deepresearch.world.generator import generate_world

    for src in load_data_sources().sources:
        if src.kind != "synthetic":
            continue
        generate_world(load_config(src.config).world).save(tmp_path / src.name)
        assert dir_digest(tmp_path / src.name) == src.world_sha256, (
            f"{src.name}: the generator no longer reproduces the catalogued world; if the change is "
            "intended, update registry/data_sources.yaml"
        )


def test_images_catalog_matches_the_image_definitions():
    from containers.images import IMAGES

    catalog = load_images().images
    assert set(catalog) == set(IMAGES)
    for family, spec in IMAGES.items():
        assert spec.name == catalog[family].name
        assert (spec.base_image is not None) == catalog[family].gpu


def test_a_bad_catalog_names_the_file_and_field(tmp_path):
    p = tmp_path / "data_sources.yaml"
    p.write_text("schema_version: 1\nsources:\n  - {name: x, kind: wikidata5m, uri: s3://b/k, files: {a.txt: nope}}\n")
    with pytest.raises(ConfigError, match="data_sources.yaml.*lack a valid sha256"):
        load_data_sources(p)
