"""fastst: fast feed-forward neural style transfer, trained with a modern PyTorch stack."""

__version__ = "0.1.0"
