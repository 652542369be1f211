"""Loss functions of seed 3.3.3: cross-entropy (on logits or on log-probabilities) and MSE.

Calling a loss returns the mean loss over the batch (a :class:`LossValue`: a Python float) and
remembers what its ``backward()`` needs; the *criterion's* ``backward()`` returns ``∂L/∂input``,
to be passed to the model's backward. There is no autograd: where PyTorch writes
``loss.backward()``, nnscratch writes ``model.backward(criterion.backward())``.

Which cross-entropy? The seed's network ends in ``log_softmax`` and is trained with
``CrossEntropyLoss``, which applies a *second* log-softmax. Log-softmax is idempotent on
log-probabilities (``Σ_k exp(y_k) = 1``, so ``log_softmax(y) = y - log 1 = y``): the loss and its
gradients are exactly those of the cross-entropy of the model's probabilities, but the second
log-softmax is wasted work and hides which loss is meant. The right pairings are:

* network ends in ``LogSoftmax`` -> :class:`NLLLoss` (``L = -mean_n y[n, t_n]``);
* network ends in the last ``Dense`` (logits) -> :class:`CrossEntropyLoss`.

Both compute the seed's ``L = -Σ_i t_i log y_i`` with one-hot ``t`` and ``y = softmax(logits)``.
"""
import numpy as np

from .. import ops
from .module import keeps_for_backward

LOG_PROBABILITY_TOLERANCE = 1e-3
"""How far from 0 :class:`NLLLoss` accepts ``log Σ_k exp(y_nk)`` for each row of its input."""


class LossValue(float):
    """The value of a loss: a plain ``float`` in every use (arithmetic, ``math.isfinite``,
    formatting, JSON), plus ``.item()`` as PyTorch's tensors have. Its ``.backward()`` raises
    an error saying what to call instead: nnscratch has no autograd tape behind the number."""

    __slots__ = ()

    def item(self):
        """The value as a plain ``float``."""
        return float(self)

    def backward(self, *args, **kwargs):
        raise TypeError(
            "a loss value is a plain number: nnscratch has no autograd, so loss.backward() cannot work. "
            "Call model.backward(criterion.backward()) instead (the criterion remembers its last call), "
            "between optimizer.zero_grad() and optimizer.step()")


class _Loss:
    """Shared ``reduction`` handling: ``"mean"`` (default) or ``"sum"``."""

    def __init__(self, reduction="mean"):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self._grad = None
        self._nothing_kept = False

    def _keep_for_backward(self, gradient, *args):
        """Remember ``∂L/∂input = gradient(*args)`` for :meth:`backward`, unless the call runs inside
        :func:`nnscratch.nn.module.no_grad` or ``inference`` (as in ``evaluate``): then compute and keep nothing."""
        keep = keeps_for_backward()
        self._grad, self._nothing_kept = (gradient(*args) if keep else None), not keep

    def _scale(self, count):
        """``1/count`` for the mean (an empty batch has no mean: error), 1 for the sum."""
        if self.reduction == "sum":
            return 1.0
        if count == 0:
            raise ValueError(f"{type(self).__name__}: the mean loss of an empty batch is undefined")
        return 1.0 / count

    def backward(self):
        """``∂L/∂input`` for the last call."""
        if self._grad is None and self._nothing_kept:
            raise RuntimeError(f"{type(self).__name__}: backward after a call that kept nothing: it ran inside "
                               "no_grad() or inference() (as evaluate does), where no backward may follow")
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}: backward called before the loss was computed")
        return self._grad

    def __repr__(self):
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class CrossEntropyLoss(_Loss):
    """Cross-entropy of logits ``z`` (N, C) against labels ``t`` (N,):

    .. math::
        L = -\\frac{1}{N} \\sum_n \\log \\mathrm{softmax}(z_n)_{t_n}
          = \\frac{1}{N} \\sum_n \\Big( \\log \\sum_j e^{z_{nj} - m_n} + m_n - z_{n t_n} \\Big),\\quad m_n = \\max_j z_{nj}

    (log-sum-exp: no exponential overflows). Gradient: ``∂L/∂z = (softmax(z) - onehot(t)) / N``.
    See :func:`nnscratch.backends.reference.cross_entropy_forward` and ``cross_entropy_backward``.
    """

    def __call__(self, input, target):
        z, t = ops.check_labels(input, target, "CrossEntropyLoss")
        scale = self._scale(len(t))
        self._keep_for_backward(ops.cross_entropy_backward, z, t, scale)
        return LossValue(ops.cross_entropy(z, t, scale))


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities ``y`` (N, C), e.g. a ``LogSoftmax`` output:

    ``L = -1/N Σ_n y[n, t_n]``; gradient ``∂L/∂y[n, k] = -[k = t_n] / N``.

    The input must be log-probabilities: each row's probabilities ``exp(y_nk)`` sum to 1, i.e.
    ``|log Σ_k exp(y_nk)| <= 1e-3`` (:data:`LOG_PROBABILITY_TOLERANCE`; a float32 ``LogSoftmax``
    output is within about 1e-6, and a gradient check's ±1e-6 nudges move it by at most 1e-6).
    Anything else -- typically logits, on which the loss would silently come out negative or
    meaningless -- raises :class:`ValueError`. Rows holding NaN or infinite values are not
    checked, so a diverging run still ends in a non-finite loss.
    See :func:`nnscratch.backends.reference.nll_forward` and ``nll_backward``.
    """

    def __call__(self, input, target):
        y, t = ops.check_labels(input, target, "NLLLoss")
        _check_log_probabilities(y)
        scale = self._scale(len(t))
        self._keep_for_backward(ops.nll_backward, y, t, scale)
        return LossValue(ops.nll(y, t, scale))


def _check_log_probabilities(y):
    """Raise unless every finite row of `y` is log-probabilities (``log Σ_k exp(y_k) ≈ 0``)."""
    with np.errstate(invalid="ignore", over="ignore"):
        top = y.max(axis=1, keepdims=True)
        log_total = (top + np.log(np.exp(y - top).sum(axis=1, keepdims=True)))[:, 0]
    bad = np.flatnonzero(np.isfinite(log_total) & (np.abs(log_total) > LOG_PROBABILITY_TOLERANCE))
    if bad.size:
        n = bad[0]
        raise ValueError(
            f"NLLLoss: the input must be log-probabilities (log Σ_k exp(y_k) = 0 in each row), but row {n} has "
            f"log Σ_k exp(y_k) = {float(log_total[n]):.4g} ({bad.size} of {len(y)} rows are off). For a network "
            "that outputs logits use CrossEntropyLoss, or end the model with LogSoftmax(dim=1)")


class MSELoss(_Loss):
    """Mean squared error over all elements: ``L = 1/n Σ_i (y_i - t_i)²``; ``∂L/∂y = 2 (y - t) / n``
    (see :func:`nnscratch.backends.reference.mse_forward` and ``mse_backward``)."""

    def __call__(self, input, target):
        y, t = ops.check_regression_target(input, target, "MSELoss")
        scale = self._scale(y.size)
        self._keep_for_backward(ops.mse_backward, y, t, scale)
        return LossValue(ops.mse(y, t, scale))
