"""``SGD``: gradient descent of seed 3.3.4, ``θ ← θ - η ∇L(θ)``, with PyTorch's momentum update."""
import math
import numbers

import numpy as np

from .. import ops
from ..nn.module import Parameter


class SGD:
    """Stochastic gradient descent, numerically the update of ``torch.optim.SGD``.

    For each parameter θ with gradient ``g``:

    .. math::
        g &\\leftarrow g + λ θ                     &&\\text{(weight decay λ)} \\\\
        b &\\leftarrow μ b + (1 - τ) g             &&\\text{(momentum μ, dampening τ; } b = g \\text{ at the first step)} \\\\
        g &\\leftarrow g + μ b \\text{ if nesterov else } b \\\\
        θ &\\leftarrow θ - η g

    With ``momentum=0`` this is the seed's plain ``θ ← θ - η ∇L(θ)``.

    ``params`` is an iterable of :class:`Parameter` or of dicts (parameter groups) such as
    ``[{"params": body.parameters(), "lr": 1e-3}, {"params": head.parameters()}]``; a key
    missing from a group takes the constructor's value. A parameter whose ``requires_grad``
    is false at ``step()`` time is skipped entirely: its values, its momentum buffer and its
    weight decay stay untouched, even if it was frozen after the optimizer was built.
    """

    DEFAULTS = ("lr", "momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        self.defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
        params = list(params)
        if not params:
            raise ValueError("SGD: got an empty parameter list")
        self.param_groups = []
        for group in params if isinstance(params[0], dict) else [{"params": params}]:
            self.add_param_group(group)
        self.state = {}  # id(param) -> {"momentum_buffer": array}

    def add_param_group(self, group):
        """Add a group ``{"params": [...], "lr": ..., ...}`` (missing keys take the constructor's
        values), as PyTorch's: e.g. the new head after :func:`nnscratch.transfer.replace_head`,
        ``optimizer.add_param_group({"params": net.fc2.parameters()})``."""
        group = {**self.defaults, **group, "params": list(group["params"])}
        self._check_group(group)
        seen = {id(param) for param in self.parameters()}
        for param in group["params"]:
            if not isinstance(param, Parameter):
                raise TypeError(f"SGD: expected Parameter objects, got {type(param).__name__}")
            if id(param) in seen:
                raise ValueError("SGD: a parameter appears in more than one group")
            seen.add(id(param))
        self.param_groups.append(group)

    @staticmethod
    def _check_group(group, where="SGD"):
        """Refuse hyper-parameters SGD cannot use: lr and weight_decay finite and >= 0, momentum in
        [0, 1) (at 1 or above the momentum buffer grows without bound), dampening in [0, 1],
        nesterov a bool (and then momentum > 0, dampening 0)."""
        for name, low, high, closed in (("lr", 0.0, math.inf, False), ("momentum", 0.0, 1.0, False),
                                        ("dampening", 0.0, 1.0, True), ("weight_decay", 0.0, math.inf, False)):
            value = group[name]
            if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{where}: {name} must be a real number, got {type(value).__name__} {value!r:.40}")
            inside = low <= value <= high if closed else low <= value < high
            if not inside:
                interval = f"[{low:g}, {high:g}]" if closed else f"[{low:g}, {high:g})"
                raise ValueError(f"{where}: {name} must lie in {interval}, got {value} (lr, momentum and "
                                 "weight_decay must be >= 0, momentum < 1, dampening in [0, 1])")
        if not isinstance(group["nesterov"], (bool, np.bool_)):
            raise ValueError(f"{where}: nesterov must be True or False, got {group['nesterov']!r:.40}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"{where}: nesterov momentum requires momentum > 0 and dampening = 0")

    def parameters(self):
        return (param for group in self.param_groups for param in group["params"])

    def zero_grad(self):
        """Forget the gradients of every parameter (``.grad = None``)."""
        for param in self.parameters():
            param.grad = None

    def step(self):
        """Apply one update to every parameter that requires a gradient and has one
        (:func:`nnscratch.backends.reference.sgd_update`, on the active backend)."""
        for group in self.param_groups:
            hyper = {k: group[k] for k in self.DEFAULTS}
            for param in group["params"]:
                if not param.requires_grad or param.grad is None:
                    continue
                if not param.data.flags.c_contiguous or not param.data.flags.writeable:
                    param.data = np.array(param.data, order="C")  # updated in place from now on
                buffer, first = None, False
                if group["momentum"]:
                    state = self.state.setdefault(id(param), {})
                    buffer = state.get("momentum_buffer")
                    if buffer is None:  # b = g at the first step
                        buffer = state["momentum_buffer"] = np.empty_like(param.data)
                        first = True
                ops.sgd_update(param.data, param.grad, buffer, first=first, where="SGD", **hyper)

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self):
        """Hyper-parameters per group and momentum buffers keyed by the parameter's position
        (0, 1, … over the groups in order), as PyTorch; arrays only, no objects."""
        groups, state, position = [], {}, 0
        for group in self.param_groups:
            indices = list(range(position, position + len(group["params"])))
            groups.append({**{k: group[k] for k in self.DEFAULTS}, "params": indices})
            for index, param in zip(indices, group["params"]):
                buffer = self.state.get(id(param), {}).get("momentum_buffer")
                if buffer is not None:
                    state[index] = {"momentum_buffer": buffer.copy()}
            position += len(group["params"])
        return {"param_groups": groups, "state": state}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned, onto the same parameters in the same order.

        Everything is checked before anything changes (so a refused state leaves the optimizer as
        it was): the groups' sizes and parameter positions, each hyper-parameter (as the
        constructor checks them), and each momentum buffer's position, shape and dtype (floating)."""
        where = "SGD.load_state_dict"
        if not isinstance(state_dict, dict) or set(state_dict) != {"param_groups", "state"}:
            raise ValueError(f"{where}: expected a dict with the keys 'param_groups' and 'state'")
        groups, saved_state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            raise ValueError(f"{where}: param_groups must be a list of dicts")
        position, hyper = 0, []
        for i, (group, saved) in enumerate(zip(self.param_groups, groups)):
            expected = list(range(position, position + len(group["params"])))
            position += len(group["params"])
            if saved.get("params") != expected or set(saved) != {"params", *self.DEFAULTS}:
                break
            values = {k: saved[k] for k in self.DEFAULTS}
            self._check_group(values, f"{where}: group {i}")
            hyper.append(values)
        if len(hyper) != len(self.param_groups) or len(groups) != len(self.param_groups):
            raise ValueError(f"{where}: the saved parameter groups do not match this optimizer's (expected "
                             f"{len(self.param_groups)} groups of {[len(g['params']) for g in self.param_groups]} "
                             f"parameters, keys params, {', '.join(self.DEFAULTS)})")
        params = list(self.parameters())
        if not isinstance(saved_state, dict):
            raise ValueError(f"{where}: state must be a dict, got {type(saved_state).__name__}")
        buffers = {}
        for index, saved in saved_state.items():
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(params):
                raise ValueError(f"{where}: state index {index!r:.40} is not a parameter position 0..{len(params) - 1}")
            if not isinstance(saved, dict) or set(saved) != {"momentum_buffer"}:
                raise ValueError(f"{where}: state {index} must hold exactly a 'momentum_buffer'")
            param, buffer = params[index], saved["momentum_buffer"]
            if not isinstance(buffer, np.ndarray) or buffer.dtype.kind != "f":
                raise ValueError(f"{where}: momentum buffer {index} must be a floating-point array, got "
                                 f"{getattr(buffer, 'dtype', type(buffer).__name__)}")
            if buffer.shape != param.shape:
                raise ValueError(f"{where}: momentum buffer {index} has shape {buffer.shape}, "
                                 f"parameter has {param.shape}")
            buffers[id(param)] = {"momentum_buffer": buffer.astype(param.dtype, copy=True)}
        for group, values in zip(self.param_groups, hyper):
            group.update(values)
        self.state = buffers

    def __repr__(self):
        lines = [f"SGD ({len(self.param_groups)} group{'s' * (len(self.param_groups) != 1)})"]
        for i, group in enumerate(self.param_groups):
            hyper = ", ".join(f"{k}={group[k]}" for k in self.DEFAULTS)
            lines.append(f"  group {i}: {len(group['params'])} parameters, {hyper}")
        return "\n".join(lines)
