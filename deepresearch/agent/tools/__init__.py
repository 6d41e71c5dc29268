"""Agent tools: batch_web_surfer, todo, file, shell. Each registers itself in `tools.base.TOOLS`."""
