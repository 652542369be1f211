"""The seed article's PyTorch ``Net`` (section 4.2), for parity tests and benchmarks.

It lives with the tests, outside the installed package, because users never import it:
the tests import it as a sibling module and ``benchmarks/bench.py`` loads it from this folder.
PyTorch is never a dependency of nnscratch: this module imports torch only when
:func:`seed_net` is called. The state
dict keys (``conv1.weight``, …, ``fc2.bias``) are those of :func:`nnscratch.models.seed_net`,
so weights copy across with :func:`nnscratch.transfer.to_torch_state_dict`.
"""


def seed_net(log_softmax=True):
    """A ``torch.nn.Module`` written exactly as the seed's code; ``log_softmax=False`` returns logits."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, 1)
            self.conv2 = nn.Conv2d(32, 64, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(9216, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = torch.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.dropout2(x)
            x = self.fc2(x)
            if not log_softmax:
                return x
            output = F.log_softmax(x, dim=1)
            return output

    return Net()
