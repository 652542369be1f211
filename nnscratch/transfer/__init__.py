"""Transfer learning: reuse what a network learned on one task for another.
A convolutional network trained on a large task learns, layer after layer, features of
growing abstraction: the first convolutions respond to edges and blobs, the next ones to
strokes and corners, the dense layers to whole shapes of the task's classes. Only the last
layers are specific to the task; the rest is a general-purpose *feature extractor*. The seed
article distinguishes three ways of using that:
1. **Pre-training.** Train a network on a large task (e.g. the seed's ``Net`` on all of
   MNIST) and keep its weights (:func:`save_weights`).
2. **Fine-tuning.** Load the pre-trained weights into a network for the new task
   (:func:`load_weights`, :func:`load_model`, :func:`from_torch_state_dict`), replace the
   layers that do not fit it -- the output layer (:func:`replace_head`) and, if the images
   differ, the input layer (:func:`adapt_input_channels`) -- and train on the new task,
   usually first the new head alone on a frozen body, then everything with a smaller
   learning rate for the pre-trained layers (:func:`freeze`, :func:`param_groups`,
   :func:`fine_tune`).
3. **Feature extraction.** Keep the pre-trained network frozen and use the activations of
   one of its layers as the input representation of another model
   (:func:`extract_features`, :func:`cut`, :func:`extend`).

Freezing
--------
A parameter is frozen when its ``requires_grad`` is false (:class:`nnscratch.Parameter`). A
frozen parameter is *never changed*: ``Conv2d`` and ``Dense`` do not compute its gradient,
:class:`nnscratch.SGD` skips it entirely at every step (no update, no momentum, no weight
decay -- even if the optimizer was built, and had momentum buffers, before the freeze), and
``Sequential.backward(grad, need_input_grad=False)`` (what :func:`nnscratch.fit` calls) stops
at the lowest layer holding a trainable parameter, so the frozen layers below it do no
backward work at all. :func:`frozen_snapshot` and :func:`assert_frozen_unchanged` verify
the promise bit for bit.
Weight files
------------
:func:`save_weights` writes a safetensors file through :mod:`nnscratch.io.safetensors`.
Unlike ``pickle`` (and so ``torch.save`` or ``np.load(allow_pickle=True)``), which runs
whatever code its author embedded when a file is loaded, a safetensors file is a JSON header
followed by raw little-endian array bytes: it *cannot carry code*, so loading weights found
on the internet can at worst fail. Loading validates the header size, the JSON, every dtype
(numeric only: no object arrays), shape and byte offset before building any array, and
refuses a malformed or hostile file with a :class:`ValueError`. Writes are atomic
(temporary file, fsync, rename): an interrupted save never leaves a half-written file.

The file's JSON header (format :data:`FORMAT`, version :data:`FORMAT_VERSION`) records the
nnscratch version, the architecture -- every layer's name, class and constructor arguments, as
the layer itself reports them (:func:`architecture`) -- and the input shape, so :func:`load_model`
rebuilds the network from the file alone. Rebuilding only instantiates the registered layer
classes of :data:`LAYER_CLASSES`, each checking its own arguments; nothing in a file can name a
function to call.
PyTorch
-------
nnscratch layers carry PyTorch's names and weight layouts (``conv1.weight`` is
``(out_channels, in_channels, kH, kW)``, ``fc1.weight`` is ``(out_features, in_features)``),
so a PyTorch ``state_dict`` loads directly (:func:`from_torch_state_dict`) and an nnscratch
model exports to one (:func:`to_torch_state_dict`). This package never imports torch.

Where things are
----------------
One file per concept, everything re-exported here (``nnscratch.transfer.X``):
:mod:`.weights` (weight files: :func:`save_weights`, :func:`load_weights`, :func:`load_model`),
:mod:`.freezing`, :mod:`.surgery` (:func:`replace_head`, :func:`cut`, :func:`extend`,
:func:`adapt_input_channels`), :mod:`.features` (:func:`extract_features`), :mod:`.finetune`
(:func:`param_groups`, :func:`fine_tune`) and :mod:`.summary`; the architecture header and
:func:`build_model` are in :mod:`nnscratch.io.architecture`, the PyTorch state dicts in
:mod:`nnscratch.io.torch_interop`, :class:`LoadReport` (the one loader of arrays by name) in
:mod:`nnscratch.nn.state`. The studies built on them are :mod:`.study` and :mod:`.limits`.
Example
-------
The seed's three modes with this module::
    import nnscratch as nn
    from nnscratch import transfer

    net = nn.models.seed_net()                      # 1. pre-training (e.g. on digits 0-4), then
    transfer.save_weights(net, "pretrained.safetensors", input_shape=(1, 28, 28))
    net = transfer.load_model("pretrained.safetensors")          # 2. fine-tuning on digits 5-9
    transfer.replace_head(net, num_classes=5)
    history = transfer.fine_tune(net, nn.NLLLoss(), loader, head_epochs=1, full_epochs=2,
                                 lr=0.01, body_lr=0.001)

    features = transfer.extract_features(net, images, before="fc2")   # 3. (N, 128) features
"""
from ..io.architecture import LAYER_CLASSES, architecture, build_model
from ..io.torch_interop import from_torch_state_dict, to_torch_state_dict
from ..nn.state import LoadReport
from .features import extract_features
from .finetune import fine_tune, param_groups
from .freezing import (
    assert_frozen_unchanged, freeze, freeze_to, frozen_parameters, frozen_snapshot, trainable_parameters, unfreeze,
)
from .summary import summary
from .surgery import adapt_input_channels, cut, extend, head_name, replace_head
from .weights import FORMAT, FORMAT_VERSION, load_model, load_weights, save_weights

__all__ = [
    "FORMAT", "FORMAT_VERSION", "LAYER_CLASSES", "LoadReport",
    "adapt_input_channels", "architecture", "assert_frozen_unchanged", "build_model", "cut", "extend",
    "extract_features", "fine_tune", "freeze", "freeze_to", "from_torch_state_dict", "frozen_parameters",
    "frozen_snapshot", "head_name", "load_model", "load_weights", "param_groups", "replace_head", "save_weights",
    "summary", "to_torch_state_dict", "trainable_parameters", "unfreeze",
]
