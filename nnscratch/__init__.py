"""nnscratch: a convolutional neural network library from scratch, in NumPy with Cython kernels.

Every formula lives readable in :mod:`nnscratch.backends.reference`; the compiled kernels of
``nnscratch/_kernels.pyx`` are tested equal to it. Layers carry PyTorch's names so that
PyTorch code maps onto nnscratch line by line::

    import nnscratch as nn
    net = nn.models.seed_net()
    criterion = nn.NLLLoss()
    optimizer = nn.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss = criterion(net(x), y)
    optimizer.zero_grad(); net.backward(criterion.backward()); optimizer.step()
"""
from .backends import backend, get_num_threads, set_backend, set_num_threads, use_backend
from .backends.conv_algorithm import get_conv_algorithm, set_conv_algorithm, use_conv_algorithm
from .gradient_check import GradcheckError, gradcheck
from .nn import (
    AvgPool2d, Conv2d, CrossEntropyLoss, Dense, Dropout, Flatten, Linear, LogSoftmax, MaxPool2d, Module, MSELoss,
    NLLLoss, Parameter, ReLU, Sequential, Softmax, enable_grad, inference, no_grad,
)
from .optim import SGD
from .rng import manual_seed
from .training import History, TrainingDivergedError, evaluate, fit, predict, predict_proba
# the subpackages and modules users reach as nnscratch.X (nnscratch.plot is imported on demand: matplotlib)
from . import backends, data, io, malloc, models, nn, ops, optim, training, transfer
from .backends import reference  # every formula, as nnscratch.reference (its home: nnscratch/backends/reference.py)
from .io import safetensors as serialization  # weight-file reading and writing, as nnscratch.serialization



def _installed_version():
    """The version pyproject.toml declares (its one home), as the installed package metadata records it."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("nnscratch")
    except PackageNotFoundError:  # imported from a source tree that was never `pip install`ed
        return "0+unknown"


__version__ = _installed_version()

__all__ = [
    "AvgPool2d", "Conv2d", "CrossEntropyLoss", "Dense", "Dropout", "Flatten", "GradcheckError", "History", "Linear",
    "LogSoftmax", "MSELoss", "MaxPool2d", "Module", "NLLLoss", "Parameter", "ReLU", "SGD", "Sequential", "Softmax",
    "TrainingDivergedError", "backend", "backends", "data", "enable_grad", "evaluate", "fit", "get_conv_algorithm",
    "get_num_threads", "gradcheck", "inference", "io", "malloc", "manual_seed", "models", "nn", "no_grad", "ops", "optim",
    "predict", "predict_proba", "reference", "serialization", "set_backend", "set_conv_algorithm", "set_num_threads",
    "training", "transfer", "use_backend", "use_conv_algorithm",
]
