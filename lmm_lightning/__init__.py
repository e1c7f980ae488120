"""lmm_lightning: evaluate language and vision-language models with PyTorch Lightning."""

__version__ = "0.1.0"
