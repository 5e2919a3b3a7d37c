"""resbench: the ResNet family from scratch in plain PyTorch, measured honestly."""

__version__ = "0.1.0"
