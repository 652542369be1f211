"""Files: safetensors weight files and checkpoints that cannot carry code (:mod:`.safetensors`)."""
from . import safetensors

__all__ = ["safetensors"]
