"""Benchmark computations behind the recipes in ``recipes/`` (one module per recipe)."""
