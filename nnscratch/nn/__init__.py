"""Layers and losses: each layer is a :class:`Module` whose ``forward`` and ``backward`` call
:mod:`nnscratch.ops` (which checks the arguments and runs the active backend's formula)."""
from .activation import LogSoftmax, ReLU, Softmax
from .container import Sequential
from .conv import Conv2d
from .dense import Dense, Linear
from .dropout import Dropout
from .flatten import Flatten
from .losses import CrossEntropyLoss, MSELoss, NLLLoss
from .module import Module, Parameter, enable_grad, inference, no_grad
from .pooling import AvgPool2d, MaxPool2d
from .registry import LAYER_CLASSES, register_layer
from .state import LoadReport, load_arrays

__all__ = [
    "AvgPool2d", "Conv2d", "CrossEntropyLoss", "Dense", "Dropout", "Flatten", "LAYER_CLASSES", "Linear", "LoadReport",
    "LogSoftmax", "MSELoss", "MaxPool2d", "Module", "NLLLoss", "Parameter", "ReLU", "Sequential", "Softmax",
    "enable_grad", "inference", "load_arrays", "no_grad", "register_layer",
]
