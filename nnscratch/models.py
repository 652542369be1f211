"""Ready-made networks: the seed's Net (section 4.2) and the small convnet of Keras's transfer example."""
from collections import OrderedDict

from .nn.activation import LogSoftmax, ReLU
from .nn.container import Sequential
from .nn.conv import Conv2d
from .nn.dense import Dense
from .nn.dropout import Dropout
from .nn.flatten import Flatten
from .nn.pooling import MaxPool2d


def seed_net(num_classes=10, log_softmax=True):
    """The seed's ``Net`` (section 4.2), layer for layer, with the same parameter names::

        conv1 = Conv2d(1, 32, 3, 1)     x = relu(conv1(x))
        conv2 = Conv2d(32, 64, 3, 1)    x = relu(conv2(x))
                                        x = max_pool2d(x, 2)
        dropout1 = Dropout(0.25)        x = flatten(dropout1(x), 1)
        fc1 = Linear(9216, 128)         x = dropout2(relu(fc1(x)))
        dropout2 = Dropout(0.5)
        fc2 = Linear(128, 10)           output = log_softmax(fc2(x), dim=1)

    Input (N, 1, 28, 28); output log-probabilities (N, num_classes), to be trained with
    :class:`nnscratch.NLLLoss` (with ``log_softmax=False`` it outputs logits, for
    :class:`nnscratch.CrossEntropyLoss`).
    """
    layers = [
        ("conv1", Conv2d(1, 32, 3, 1)), ("relu1", ReLU()),
        ("conv2", Conv2d(32, 64, 3, 1)), ("relu2", ReLU()),
        ("pool", MaxPool2d(2)), ("dropout1", Dropout(0.25)), ("flatten", Flatten(1)),
        ("fc1", Dense(9216, 128)), ("relu3", ReLU()), ("dropout2", Dropout(0.5)),
        ("fc2", Dense(128, num_classes)),
    ]
    if log_softmax:
        layers.append(("log_softmax", LogSoftmax(dim=1)))
    return Sequential(OrderedDict(layers))


def keras_transfer_net(num_classes=5, filters=32, hidden=128):
    """The convnet of Keras's ``mnist_transfer_cnn`` example: two 3×3 convolutions with ``filters``
    channels, max-pool 2, dropout .25, dense ``hidden``, dropout .5, dense ``num_classes`` (logits)."""
    return Sequential(OrderedDict([
        ("conv1", Conv2d(1, filters, 3)), ("relu1", ReLU()),
        ("conv2", Conv2d(filters, filters, 3)), ("relu2", ReLU()),
        ("pool", MaxPool2d(2)), ("dropout1", Dropout(0.25)), ("flatten", Flatten(1)),
        ("fc1", Dense(filters * 12 * 12, hidden)), ("relu3", ReLU()), ("dropout2", Dropout(0.5)),
        ("fc2", Dense(hidden, num_classes)),
    ]))
