"""Policies that propose assistant turns: scripted expert, OpenAI-compatible endpoint."""
