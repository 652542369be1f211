"""Check analytic gradients against centered finite differences, in float64.

For a scalar ``f(v) = Σ (forward(x) ⊙ g)`` with a random upstream gradient ``g`` (so every
output element matters), each input and parameter element ``v_i`` is nudged by ``±ε``:

.. math::
    \\frac{∂f}{∂v_i} \\approx \\frac{f(v + ε e_i) - f(v - ε e_i)}{2ε}   \\qquad (\\text{error } O(ε^2))

and compared with what ``backward`` returned, by the relative error

.. math::
    \\mathrm{rel}(a, n) = \\frac{\\max_i |a_i - n_i|}{\\max(10^{-8},\\ \\max_i |a_i| + \\max_i |n_i|)}

A correct float64 backward gives about 1e-9 or less; a wrong one gives 1e-2 or more.

The check compares one function at nearby points, so every forward pass must compute the *same*
function: a ``Dropout`` in training mode draws a new mask at each pass (relative errors ≈ 1), and
:func:`check_module` refuses it up front unless ``before_forward`` replays one mask.

``nnscratch.gradcheck`` is the function :func:`gradcheck`; this module is
``nnscratch.gradient_check``.
"""
import numpy as np

from .nn.dropout import Dropout
from .nn.module import enable_grad


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with its finite-difference estimate."""


def relative_error(analytic, numeric):
    """``max|a - n| / max(1e-8, max|a| + max|n|)``."""
    analytic, numeric = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    if analytic.size == 0:
        return 0.0
    scale = max(1e-8, np.abs(analytic).max() + np.abs(numeric).max())
    return float(np.abs(analytic - numeric).max() / scale)


def numeric_gradient(f, array, eps=1e-6):
    """Centered differences of the scalar function ``f()`` with respect to every element of ``array``
    (changed in place and restored)."""
    grad = np.zeros_like(array, dtype=np.float64)
    flat, grad_flat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + eps
        f_plus = f()
        flat[i] = original - eps
        f_minus = f()
        flat[i] = original
        grad_flat[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def check_module(module, x, eps=1e-6, seed=0, before_forward=None):
    """Relative errors of ``module``'s gradients, ``{"input": e, "<param name>": e, ...}``.

    The module is converted to float64 in place. ``before_forward`` is called before every
    forward pass (e.g. to reseed a dropout layer so every pass draws the same mask).
    Frozen parameters (``requires_grad=False``) are not checked.

    A ``Dropout`` with ``p > 0`` in training mode raises :class:`ValueError` unless
    ``before_forward`` is given: call ``module.eval()`` first, or pass e.g.
    ``before_forward=lambda: dropout.manual_seed(0)``.
    """
    if before_forward is None:
        _refuse_random_dropout(module)
    module.double()
    x = np.array(x, dtype=np.float64, copy=True)
    before_forward = before_forward or (lambda: None)

    def run():
        before_forward()
        return module(x)

    upstream = np.random.default_rng(seed).standard_normal(run().shape)
    module.zero_grad()
    with enable_grad():  # a module in eval mode keeps nothing for a backward otherwise
        before_forward()
        module(x)
        grad_x = module.backward(upstream)

    def f():
        return float(np.sum(run() * upstream))

    errors = {"input": relative_error(grad_x, numeric_gradient(f, x, eps))}
    for name, param in module.named_parameters():
        if param.requires_grad:
            errors[name] = relative_error(param.grad, numeric_gradient(f, param.data, eps))
    return errors


def _refuse_random_dropout(module):
    """Raise if a Dropout of `module` would draw a new mask at every forward pass."""
    active = [f"{name or 'the module'} ({layer._where()})" for name, layer in module.named_modules()
              if isinstance(layer, Dropout) and layer.training and layer.p > 0]
    if active:
        raise ValueError(
            f"gradient check of {module._where()}: dropout in training mode at {', '.join(active)} draws a new "
            "mask at every forward pass, so the finite differences compare different functions (relative "
            "errors near 1). Call model.eval() before the check, or pass before_forward=... that fixes the mask "
            "(e.g. before_forward=lambda: dropout.manual_seed(0))")


def check_loss(loss, input, target, eps=1e-6):
    """Relative error of ``loss.backward()`` against centered differences of ``loss(input, target)``."""
    input = np.array(input, dtype=np.float64, copy=True)
    loss(input, target)
    analytic = loss.backward().copy()
    return relative_error(analytic, numeric_gradient(lambda: loss(input, target), input, eps))


def gradcheck(module, x, tol=1e-6, **kwargs):
    """Raise :class:`GradcheckError` unless every gradient of ``module`` at ``x`` is within ``tol``;
    return the errors otherwise (see :func:`check_module`)."""
    errors = check_module(module, x, **kwargs)
    bad = {name: e for name, e in errors.items() if not e <= tol}
    if bad:
        raise GradcheckError(f"{module._where()}: gradient check failed (relative errors {bad}, tolerance {tol})")
    return errors
