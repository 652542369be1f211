"""nnscratch: a convolutional neural network library from scratch, in NumPy with Cython kernels.

Every formula lives readable in :mod:`nnscratch.reference`; the compiled kernels of
``nnscratch/_kernels.pyx`` are tested equal to it. Layers carry PyTorch's names so that
PyTorch code maps onto nnscratch line by line::

    import nnscratch as nn
    net = nn.models.seed_net()
    criterion = nn.NLLLoss()
    optimizer = nn.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss = criterion(net(x), y)
    optimizer.zero_grad(); net.backward(criterion.backward()); optimizer.step()
"""
from ._backend import backend, get_num_threads, set_backend, set_num_threads, use_backend
from .activation import LogSoftmax, ReLU, Softmax
from .container import Sequential
from .conv import Conv2d
from .conv_algorithm import get_conv_algorithm, set_conv_algorithm, use_conv_algorithm
from .dense import Dense, Linear
from .dropout import Dropout
from .flatten import Flatten
from .gradient_check import GradcheckError, gradcheck
from .losses import CrossEntropyLoss, MSELoss, NLLLoss
from .module import Module, Parameter, enable_grad, inference, no_grad
from .optim import SGD
from .pooling import AvgPool2d, MaxPool2d
from .rng import manual_seed
from .training import History, TrainingDivergedError, evaluate, fit, predict, predict_proba
from . import conv_algorithm, data, models, ops, reference  # submodules users reach as nnscratch.X
from . import malloc, serialization, training, transfer



def _installed_version():
    """The version pyproject.toml declares (its one home), as the installed package metadata records it."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("nnscratch")
    except PackageNotFoundError:  # imported from a source tree that was never `pip install`ed
        return "0+unknown"


__version__ = _installed_version()

__all__ = [
    "AvgPool2d", "Conv2d", "CrossEntropyLoss", "Dense", "Dropout", "Flatten", "GradcheckError", "Linear",
    "LogSoftmax", "MSELoss", "MaxPool2d", "Module", "NLLLoss", "Parameter", "ReLU", "SGD", "Sequential",
    "Softmax", "backend", "conv_algorithm", "data", "enable_grad", "get_conv_algorithm", "get_num_threads", "gradcheck",
    "inference", "malloc",
    "manual_seed", "models", "no_grad", "ops",
    "reference", "set_backend", "set_conv_algorithm", "set_num_threads", "use_backend", "use_conv_algorithm",
    "History", "TrainingDivergedError", "evaluate", "fit", "predict", "predict_proba", "serialization", "training",
    "transfer",
]
