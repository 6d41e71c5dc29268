"""Paragraph-level search over the research world with authority-aware ranking.

    index = build_index(world, out_dir / "index", cfg.search)   # embedded, persistent
    backend = open_backend(cfg.search, world_dir)               # registry: embedded | http
    hits = backend.search("founded year of Veltrana Labs", k=5)
"""
