"""``Parameter`` and ``Module``: the base of every layer, with PyTorch's names.

A module computes ``forward(x)`` (also reached by calling it) and, given ``∂L/∂y``, its
``backward(grad_output)`` returns ``∂L/∂x`` and *adds* ``∂L/∂θ`` to the ``.grad`` of each of
its parameters θ (gradients accumulate until ``zero_grad()``, as in PyTorch). There is no
autograd tape: each layer keeps what its backward needs from its last forward, as in
CS231n's forward/backward pairs.

Parameters and sub-modules assigned as attributes are registered automatically, so
``named_parameters()`` yields names such as ``conv1.weight`` and ``state_dict()`` uses
the same keys as the equivalent PyTorch model.

What a layer says about itself
------------------------------
Weight files, :func:`nnscratch.transfer.load_model` and :func:`nnscratch.transfer.summary` keep no
table of layer classes: they ask the layer. ``constructor_args()`` gives the arguments that rebuild
it (what a weight file's header records), the class method ``parameter_shapes(**args)`` the shapes
of the parameters it would hold (checked against a file before anything is allocated),
``output_shape(input_shape)`` and ``flops(input_shape)`` what it computes. The defaults here suit a
layer of your own that says nothing: it cannot be rebuilt from a file (its weights still save and
load by name), its output shape is found by running it once on zeros, its FLOPs are unknown
(``None``). A class joins the registry ``load_model`` builds from with
:func:`nnscratch.nn.register_layer`.

What a forward keeps
--------------------
Only a forward that a backward may follow keeps anything. A forward keeps what its backward
needs (a convolution's input, a ReLU's output, max pooling's argmax...) when the layer is in
training mode, and keeps *nothing* -- dropping what an earlier forward kept -- when

* the layer is in eval mode (``model.eval()``), or
* it runs inside :func:`no_grad` (the caller says no backward follows), or
* it runs inside :func:`inference`, as :func:`nnscratch.predict`, :func:`nnscratch.evaluate` and
  :func:`nnscratch.transfer.extract_features` do: after them the model holds no activations
  (a 16384-image ``predict`` on the seed's net used to leave 5.4 GB behind).

A backward after such a forward raises an error saying why. To backpropagate through a model
in eval mode (a gradient check, a saliency map), run the forward inside :func:`enable_grad`.
These three contexts hold for the calling thread only.

Threads
-------
*Inference on a shared model is thread-safe*: :func:`nnscratch.predict`,
:func:`nnscratch.evaluate`, ``predict_proba`` and ``extract_features`` (or any forward inside
:func:`inference`) may run on one model from several threads at once. They act as in eval mode
without changing any module's ``training`` flag, and write nothing into the layers but the
note that nothing was kept, so each thread gets exactly what it would alone and the model is
left in the mode it was in. A criterion passed to ``evaluate`` may be shared too.

*Training is not thread-safe*: ``fit``, a training-mode forward, ``backward``, an optimizer's
``step``, ``train()``/``eval()``/``eval_mode()`` and loading weights change the model (its
kept activations, its gradients, its parameters, its modes). Give each training thread its own
model, and do not train a model while other threads run inference on it.
"""
import contextlib
import threading
from collections import OrderedDict

import numpy as np

from .state import load_arrays


class _ForwardMode(threading.local):
    """The calling thread's setting of the contexts below (each thread starts with the defaults)."""

    keep = None  # None: keep in training mode only; False: never (no_grad); True: also in eval mode (enable_grad)
    inference = False  # every module acts as in eval mode, whatever its ``training`` flag


_forward_mode = _ForwardMode()


@contextlib.contextmanager
def _forward_mode_set(**settings):
    previous = {name: getattr(_forward_mode, name) for name in settings}
    for name, value in settings.items():
        setattr(_forward_mode, name, value)
    try:
        yield
    finally:
        for name, value in previous.items():
            setattr(_forward_mode, name, value)


def no_grad():
    """``with no_grad():`` forwards in this thread keep nothing for a backward (as PyTorch's
    ``torch.no_grad``); modes are unchanged (dropout still drops in training mode)."""
    return _forward_mode_set(keep=False)


def enable_grad():
    """``with enable_grad():`` forwards in this thread keep what backward needs even in eval mode
    (a gradient check or a saliency map of a model in eval mode), and inside :func:`inference`."""
    return _forward_mode_set(keep=True)


def inference():
    """``with inference():`` forwards in this thread act as in eval mode (dropout is the identity)
    and keep nothing, without changing any module's ``training`` flag: other threads using the same
    model are unaffected. :func:`nnscratch.predict` and :func:`nnscratch.evaluate` run inside it."""
    return _forward_mode_set(keep=False, inference=True)


def keeps_for_backward(training=True):
    """Whether a forward in this thread, by a layer whose mode is ``training``, must keep what its
    backward needs (losses ask with the default: they have no mode)."""
    if _forward_mode.keep is not None:
        return _forward_mode.keep
    return training and not _forward_mode.inference


def _why_nothing_was_kept():
    if _forward_mode.inference:
        return "inside inference() (as predict, evaluate and extract_features run)"
    return "inside no_grad()" if _forward_mode.keep is False else "in eval mode (model.eval())"


class Parameter:
    """A trainable array: ``.data`` (the values), ``.grad`` (``None`` until a backward) and
    ``.requires_grad`` (``False`` freezes it: no gradient is computed and no optimizer touches it)."""

    def __init__(self, data, requires_grad=True):
        self.data = np.require(data, requirements="C")  # C-contiguous; a 0-d array stays 0-d
        self.grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    def accumulate_grad(self, grad, *, copy=True):
        """``.grad += grad`` (``.grad = grad`` the first time), in the parameter's dtype.

        The first time, ``grad`` is copied, unless ``copy=False`` says the caller hands it over
        (the layers do: their gradients are fresh arrays nobody else holds, and copying fc1's
        weight gradient cost a 4.7 MB pass per training step)."""
        if grad.shape != self.data.shape:
            raise ValueError(f"gradient of shape {grad.shape} for a parameter of shape {self.data.shape}")
        if self.grad is None:
            self.grad = np.array(grad, dtype=self.data.dtype, copy=True if copy else None)
        else:
            self.grad += grad

    def __repr__(self):
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={self.shape}, dtype={self.dtype}{frozen})"


class Module:
    """Base class of layers and containers (see the module docstring)."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        self.training = True

    # -- registration --------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() before setting {name!r}")
        # Re-assigning a registered name replaces the entry where it stands (as PyTorch), so that
        # ``net.conv1 = Conv2d(...)`` keeps conv1's place in a Sequential and in the state dict.
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
        else:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    # -- computation ---------------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output, need_input_grad=True):
        """Return ``∂L/∂x`` (``None`` when ``need_input_grad`` is false) and accumulate parameter gradients."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, x):
        return self.forward(x)

    # -- traversal -----------------------------------------------------------------------
    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (module for _, module in self.named_modules())

    def named_parameters(self, prefix=""):
        """Yield ``(dotted_name, Parameter)`` pairs, e.g. ``("conv1.weight", Parameter)``."""
        for name, module in self.named_modules(prefix):
            for pname, param in module._parameters.items():
                yield (f"{name}.{pname}" if name else pname), param

    def parameters(self):
        return (param for _, param in self.named_parameters())

    def has_trainable_parameters(self):
        return any(p.requires_grad for p in self.parameters())

    # -- modes and gradients -------------------------------------------------------------
    def train(self, mode=True):
        """Training mode (dropout active); returns ``self``."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode (dropout is the identity); returns ``self``."""
        return self.train(False)

    @contextlib.contextmanager
    def eval_mode(self):
        """Evaluation mode inside a ``with`` block; afterwards every sub-module gets back its own
        previous mode (a user may have left some layers in training mode on purpose).

        It writes the modules' ``training`` flags, so it is not for a model other threads are using:
        :func:`inference` gives eval-mode forwards without changing the model."""
        modes = [(module, module.training) for module in self.modules()]
        self.eval()
        try:
            yield self
        finally:
            for module, mode in modes:
                object.__setattr__(module, "training", mode)

    def zero_grad(self):
        """Forget accumulated gradients (``.grad = None``, as PyTorch's ``set_to_none=True``)."""
        for param in self.parameters():
            param.grad = None

    def requires_grad_(self, requires_grad=True):
        """Freeze (``False``) or unfreeze (``True``) every parameter of this module; returns ``self``."""
        for param in self.parameters():
            param.requires_grad = bool(requires_grad)
        return self

    def to(self, dtype):
        """Convert every parameter (and its gradient) to ``dtype`` in place; returns ``self``."""
        dtype = np.dtype(dtype)
        for param in self.parameters():
            param.data = param.data.astype(dtype)
            if param.grad is not None:
                param.grad = param.grad.astype(dtype)
        return self

    def double(self):
        return self.to(np.float64)

    def float(self):
        return self.to(np.float32)

    # -- state ---------------------------------------------------------------------------
    def state_dict(self):
        """An ordered ``{name: array copy}`` of every parameter, keyed as ``named_parameters()``: C-contiguous
        copies in the parameters' dtypes, which load into the equivalent PyTorch model (after
        ``torch.from_numpy``; :func:`nnscratch.transfer.to_torch_state_dict` is this)."""
        return OrderedDict((name, param.data.copy()) for name, param in self.named_parameters())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters of the same names (cast to each parameter's dtype), as PyTorch's.

        With ``strict=True`` the keys must match exactly. Shapes must always match. Every problem is
        reported at once, and a refused load changes nothing. Returns ``(missing_keys, unexpected_keys)``.
        (:func:`nnscratch.nn.state.load_arrays`, the one loader of arrays by name, with this policy.)
        """
        report = load_arrays(self, state_dict, strict=strict, mismatched="raise",
                             caller=f"{type(self).__name__}.load_state_dict")
        return report.missing, report.unexpected

    # -- what a layer says about itself (weight files, load_model, summary) -------------
    def constructor_args(self):
        """The constructor arguments that rebuild this layer: ``type(layer)(**layer.constructor_args())`` is
        an equal layer (with new initial values). A weight file's architecture header records them (tuples as
        lists, a dtype as its name). ``None`` (this default): the layer does not say; its weights still save
        and load by name, and a model holding it is built in code (:func:`nnscratch.transfer.load_weights`)."""
        return None

    @classmethod
    def parameter_shapes(cls, **args):
        """``{parameter name: shape}`` of the layer ``cls(**args)`` would build, computed *without* building it,
        so that :func:`nnscratch.transfer.load_model` compares a file's arrays with its header before allocating
        anything. Raises as the constructor does for arguments it refuses. ``None`` (this default): not known
        before the layer is built."""
        return None

    def output_shape(self, input_shape):
        """Shape of the output for an input of shape `input_shape` (batch axis included); a ValueError naming
        the layer if that input does not fit it. This default runs the layer once on zeros inside
        :func:`inference`; the built-in layers compute it from their hyper-parameters."""
        dtype = next((param.dtype for param in self.parameters()), np.float32)
        with inference():
            return tuple(self(np.zeros(tuple(input_shape), dtype=dtype)).shape)

    def flops(self, input_shape):
        """Floating-point operations of one forward in eval mode for an input of shape `input_shape` (a
        multiply-add counts 2), as :func:`nnscratch.transfer.summary` shows them. ``None`` (this default): unknown."""
        return None

    def algorithm_for(self, input_shape):
        """The name of the algorithm a forward on `input_shape` runs, for a layer that has several
        (:meth:`Conv2d.algorithm_for <nnscratch.Conv2d.algorithm_for>`); ``None`` (this default): only one."""
        return None

    # -- display -------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        return "\n".join(lines + [")"])

    def _where(self):
        """How error messages name this layer, e.g. ``Conv2d(1, 32, kernel_size=(3, 3))``."""
        return f"{type(self).__name__}({self.extra_repr()})"

    def _acts_as_training(self):
        """What layers consult instead of ``self.training``: false inside :func:`inference` too."""
        return self.training and not _forward_mode.inference

    def _save_for_backward(self, **tensors):
        """Keep ``name=value`` for the backward as attributes, if this forward must keep anything
        (see "What a forward keeps" in the module docstring); otherwise set them to ``None`` and
        note why, so a backward after it says so instead of using an older forward's values."""
        keep = keeps_for_backward(self.training)
        for name, value in tensors.items():
            self.__dict__[name] = value if keep else None
        self.__dict__["_nothing_kept"] = None if keep else _why_nothing_was_kept()

    def _saved(self, name):
        """A tensor saved by the last forward, or a clear error if there is none."""
        value = self.__dict__.get(name)
        if value is None:
            why = self.__dict__.get("_nothing_kept")
            if why is None:
                raise RuntimeError(f"{self._where()}: backward called before forward")
            raise RuntimeError(
                f"{self._where()}: backward after a forward that kept nothing: it ran {why}, where forwards keep "
                "no activations so that inference holds no memory. Run the forward in training mode "
                "(model.train()), or, to backpropagate in eval mode (a gradient check, a saliency map), "
                "inside `with nnscratch.enable_grad():`")
        return value
