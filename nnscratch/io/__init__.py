"""Files: safetensors files of named arrays and a JSON header that cannot carry code (:mod:`.safetensors`),
written atomically (:mod:`.atomic`); the architecture header that rebuilds a model (:mod:`.architecture`);
PyTorch state dicts (:mod:`.torch_interop`)."""
from . import atomic, safetensors

__all__ = ["atomic", "safetensors"]
