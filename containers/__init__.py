"""Container images per step family, as flytekit ImageSpecs (tags are content hashes)."""
