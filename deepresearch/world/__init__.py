"""The research world: a knowledge graph, documents rendered from it on domains of graded
authority, hyperlinks between documents, and deliberately conflicting low-authority claims.

    world = generate_world(cfg.world)      # seeded synthetic generator
    world.save(Path("out/world"))          # byte-identical for the same seed
    world = World.load(Path("out/world"))
"""

from deepresearch.world.schema import Claim, Document, Entity, EntityType, Tier, Triple, World

__all__ = ["Claim", "Document", "Entity", "EntityType", "Tier", "Triple", "World"]
