"""Step-DeepResearch training recipe as a library: world, search, agent, synthesis, quality, tracking.

Never imports flytekit; heavy frameworks are imported inside the functions that need them,
so `import deepresearch` stays light.
"""

__version__ = "0.1.0"
