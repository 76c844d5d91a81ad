"""LightningModules for the warmup (supernet) and final phases of each task."""
