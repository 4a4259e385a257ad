"""evor-edge: EVOR offline-RL policies, trained in PyTorch and deployed as one compiled engine."""

__version__ = "0.1.0"
