"""Flyte tasks: short adapters (typed inputs → one library call → typed outputs).

All infrastructure (resources, cache versions, retries, later images) lives in the decorators;
the work lives in `deepresearch.stages`.
"""
