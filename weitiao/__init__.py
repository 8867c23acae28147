"""weitiao (微调): a fine-tuning controller for pretrained models.

Importing the package is cheap on purpose: torch, transformers and friends load only
inside the functions that need them, so `weitiao --help` stays fast.
"""

__version__ = "0.1.0"
