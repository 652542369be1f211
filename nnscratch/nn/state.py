"""Loading arrays into a module's parameters by name: the one implementation.

:meth:`Module.load_state_dict <nnscratch.Module.load_state_dict>`, :func:`nnscratch.transfer.load_weights`,
:func:`nnscratch.transfer.from_torch_state_dict`, :func:`nnscratch.transfer.load_model` and the checkpoint
loader of :func:`nnscratch.fit` all call :func:`load_arrays`; they differ only in its policies:

* ``strict``: whether anything missing, unexpected or mismatched refuses the whole load;
* ``mismatched``: whether a shape mismatch refuses the load even when not strict (PyTorch's
  ``load_state_dict``) or is reported and left alone (loading a pre-trained body into a network
  with another head);
* ``skip``: names or prefixes neither loaded nor counted as problems;
* ``check_only``: compare and report, copy nothing (a checkpoint is checked whole before anything changes).

Whatever the policy, the comparison comes first and a refused load copies nothing; what was done,
name by name, is a :class:`LoadReport`.
"""
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

STATE_DICT = "state_dict"
"""The ``source`` of a load from an in-memory ``{name: array}`` (any other source is a file)."""


def shape_text(shape):
    """``(2, 3)`` for a shape, ``-`` for none."""
    return "-" if shape is None else str(tuple(int(d) for d in shape))


def as_names(value, what):
    """A name or an iterable of names as a list of str (None: empty); a TypeError naming `what` otherwise."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    names = list(value)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"{what}: expected a name or a list of names, got {value!r}")
    return names


def is_under(name, prefixes):
    """Whether the dotted `name` is one of `prefixes` or inside one (``fc2`` covers ``fc2.weight``)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@dataclass
class LoadReport:
    """
    What a load (:func:`nnscratch.transfer.load_weights`, :func:`~nnscratch.transfer.from_torch_state_dict`,
    ``load_state_dict``) did, name by name.

    Attributes
    ----------
    loaded : list of str
        Parameters whose values were copied from the source.
    missing : list of str
        Model parameters the source lacks (left unchanged).
    unexpected : list of str
        Source arrays the model has no parameter for (ignored).
    mismatched : list of (str, tuple, tuple)
        ``(name, model_shape, source_shape)`` for parameters present on both sides with
        different shapes (left unchanged).
    skipped : list of str
        Names, from either side, excluded by ``skip=`` (left unchanged).
    source : str
        The file, or ``"state_dict"``.
    header : dict
        The file's JSON header (``{}`` for a state dict), e.g. ``header["metadata"]``.

    ``str(report)`` is a printable table; ``report.ok`` is true when nothing is missing,
    unexpected or mismatched.
    """

    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    source: str = ""
    header: dict = field(default_factory=dict, repr=False)
    shapes: dict = field(default_factory=dict, repr=False)  # name -> (model shape or None, source shape or None)

    @property
    def ok(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self):
        """Human-readable list of every missing, unexpected and mismatched entry (empty if ``ok``)."""
        lines = []
        if self.mismatched:
            lines.append("shape mismatch: " + "; ".join(
                f"{name}: model {shape_text(m)} vs {self._side()} {shape_text(s)}" for name, m, s in self.mismatched))
        if self.missing:
            lines.append(f"missing from the {self._side()}: " + ", ".join(
                f"{name} {shape_text(self.shapes.get(name, (None, None))[0])}" for name in self.missing))
        if self.unexpected:
            lines.append(f"unexpected in the {self._side()} (no such parameter in the model): " + ", ".join(
                f"{name} {shape_text(self.shapes.get(name, (None, None))[1])}" for name in self.unexpected))
        return lines

    def _side(self):
        return "state dict" if self.source == STATE_DICT else "file"

    def __str__(self):
        status = {}
        for name in self.loaded:
            status[name] = "loaded"
        for name in self.missing:
            status[name] = "missing"
        for name in self.unexpected:
            status[name] = "unexpected"
        for name, _, _ in self.mismatched:
            status[name] = "MISMATCH"
        for name in self.skipped:
            status[name] = "skipped"
        rows = [("name", "status", "model shape", f"{self._side()} shape")]
        for name, state in status.items():
            model_shape, source_shape = self.shapes.get(name, (None, None))
            rows.append((name, state, shape_text(model_shape), shape_text(source_shape)))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        head = (f"LoadReport from {self.source}: {len(self.loaded)} loaded, {len(self.missing)} missing, "
                f"{len(self.unexpected)} unexpected, {len(self.mismatched)} mismatched, {len(self.skipped)} skipped")
        lines = [head] + ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        return "\n".join(lines)


def load_arrays(module, arrays, *, strict=True, mismatched="report", skip=(), source=STATE_DICT, header=None,
                caller="load_arrays", check_only=False):
    """
    Compare ``{name: array}`` with the parameters of `module`, then (unless refused) copy them in.

    Parameters
    ----------
    module : :class:`~nnscratch.Module`
    arrays : mapping of str to array-like
        Copied into the parameters of the same names, cast to each parameter's dtype (C-contiguous copies:
        the module never shares memory with `arrays`); a parameter's ``requires_grad`` is kept.
    strict : bool
        True: anything missing, unexpected or shape-mismatched refuses the whole load.
    mismatched : ``"report"`` or ``"raise"``
        When not strict: ``"report"`` leaves a mismatched parameter unchanged and reports it, ``"raise"``
        refuses the load (PyTorch's ``load_state_dict``, whose ``strict`` concerns the names only).
    skip : str or list of str
        Names or prefixes (``"fc2"`` covers ``fc2.weight``) neither loaded nor counted as problems; each must
        match a parameter or an array.
    source : str
        ``"state_dict"`` or the file the arrays come from (error messages and the report name it).
    header : dict, optional
        The file's header, kept in the report.
    caller : str
        Starts error messages.
    check_only : bool
        Compare and report (and raise as the policy says) but copy nothing.

    Returns
    -------
    report : :class:`LoadReport`

    Raises
    ------
    ValueError
        Listing *every* problem at once; nothing was copied.
    """
    if mismatched not in ("report", "raise"):
        raise ValueError(f"{caller}: mismatched must be 'report' or 'raise', got {mismatched!r}")
    skip = as_names(skip, f"{caller}: skip")
    own = OrderedDict(module.named_parameters())
    report = LoadReport(source=source, header={} if header is None else header)
    for prefix in skip:
        if not any(is_under(n, [prefix]) for n in list(own) + list(arrays)):
            raise ValueError(f"{caller}: skip entry {prefix!r} matches no parameter of the model or the "
                             f"{report._side()}; model parameters: {list(own)}")
    for name, param in own.items():
        shape = tuple(np.shape(arrays[name])) if name in arrays else None
        report.shapes[name] = (param.shape, shape)
        if is_under(name, skip):
            report.skipped.append(name)
        elif shape is None:
            report.missing.append(name)
        elif shape != param.shape:
            report.mismatched.append((name, param.shape, shape))
        else:
            report.loaded.append(name)
    for name in arrays:
        if name not in own:
            report.shapes[name] = (None, tuple(np.shape(arrays[name])))
            (report.skipped if is_under(name, skip) else report.unexpected).append(name)
    refused = []
    if strict:
        refused = report.problems()
    elif mismatched == "raise" and report.mismatched:
        refused = report.problems()[:1]  # the shape mismatches, listed first
    if refused:
        hint = "\n(strict=False loads what fits and reports the rest; skip=[...] excludes layers)" \
            if mismatched == "report" else ""
        raise ValueError(f"{caller}({source}): the {report._side()} does not fit the model"
                         f"{' (strict=True)' if strict else ''}, nothing was loaded:\n  " + "\n  ".join(refused) + hint)
    if not check_only:
        for name in report.loaded:
            param = own[name]
            param.data = np.array(arrays[name], dtype=param.dtype, copy=True, order="C")
    return report
