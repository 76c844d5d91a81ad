"""lnas: hardware-aware neural architecture search for PyTorch Lightning."""

__version__ = "0.1.0"
