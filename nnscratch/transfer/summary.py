"""A table of a model's layers for checking a transfer set-up before training (:func:`summary`).

Each layer reports its output shape and FLOPs itself (:meth:`Module.output_shape
<nnscratch.Module.output_shape>`, :meth:`Module.flops <nnscratch.Module.flops>`); a layer that
does not say its FLOPs shows them as unknown.
"""
from ..nn.container import Sequential
from ..nn.state import shape_text


def _leaves(model, prefix=""):
    """(dotted name, layer) for the non-Sequential layers, in forward order."""
    for name, child in model.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, Sequential):
            yield from _leaves(child, full + ".")
        else:
            yield full, child


def propagate(model, shape):
    """Run `shape` through the layers' own :meth:`~nnscratch.Module.output_shape` and
    :meth:`~nnscratch.Module.flops` (and :meth:`~nnscratch.Module.algorithm_for`): ``[(name, layer, output
    shape or None, FLOPs or None, algorithm or None)]`` and the first error (``"layer 'conv1': ..."``, or
    None); rows after an error have no shape."""
    rows, error = [], None
    for name, layer in _leaves(model):
        out, flops, algorithm = None, None, None
        if error is None:
            try:
                out = layer.output_shape(shape)
                flops = layer.flops(shape)
                algorithm = layer.algorithm_for(shape)
                shape = out
            except Exception as exc:  # any failure is reported in the summary's row
                out, error = None, f"layer {name!r}: {exc}"
        rows.append((name, layer, out, flops, algorithm))
    return rows, error


def _optimizer_groups(optimizer):
    """{id(param): group index} and the set of ids, for an SGD-like optimizer."""
    where = {}
    groups = getattr(optimizer, "param_groups", None)
    if groups is None:
        return {id(p): 0 for p in optimizer.parameters()}, [{}]
    for index, group in enumerate(groups):
        for param in group["params"]:
            where[id(param)] = index
    return where, groups


def summary(model, optimizer=None, input_shape=(1, 1, 28, 28)):
    """
    A table of the model's layers for checking a transfer set-up before training.

    One row per layer: name, class, output shape for `input_shape`, number of parameters,
    ``trainable`` / ``frozen`` / ``partly`` (some parameters frozen) / ``-`` (none), whether
    its parameters are in `optimizer` (``yes`` / ``no`` / ``partly`` / ``-``) and at which
    learning rate, the algorithm it runs for this input (a convolution: ``direct`` or ``winograd``,
    :meth:`~nnscratch.Conv2d.algorithm_for`), and its share of the forward FLOPs as the layer reports them
    (:meth:`~nnscratch.Module.flops`: multiply-adds counted as 2 FLOPs; a convolution or dense
    layer's cost is exact, the others are element counts; dropout is free in eval mode;
    ``unknown`` for a layer that does not say, which the total leaves out and names). Then
    totals and warnings:

    * trainable parameters NOT in the optimizer -- they receive gradients but are never
      updated (typically after :func:`replace_head` or :func:`adapt_input_channels` with
      an optimizer built before);
    * parameters of the optimizer that are not in the model (stale ones, same cause);
    * frozen parameters the optimizer holds -- harmless, listed for information: SGD skips
      them, and they train as soon as they are unfrozen;
    * every parameter frozen (nothing would train).

    Parameters
    ----------
    model : :class:`~nnscratch.Sequential`
    optimizer : :class:`~nnscratch.SGD`, optional
    input_shape : tuple of int or None
        Batch shape of the input, e.g. ``(1, 1, 28, 28)``; None omits shapes and FLOPs.

    Returns
    -------
    text : str
    """
    if input_shape is not None:
        rows, error = propagate(model, tuple(int(d) for d in input_shape))
    else:
        rows, error = [(name, layer, None, None, None) for name, layer in _leaves(model)], None
    total_flops = sum(flops for _, _, _, flops, _ in rows if flops is not None)
    unknown = [name for name, _, out, flops, _ in rows if out is not None and flops is None]
    in_opt, groups = _optimizer_groups(optimizer) if optimizer is not None else ({}, [])
    table = [("layer", "class", "output shape", "params", "trainable", "in optimizer", "lr", "FLOPs", "algorithm")]
    for name, layer, out, flops, algorithm in rows:
        params = list(layer.parameters())
        count = sum(p.size for p in params)
        flags = {p.requires_grad for p in params}
        trainable = "-" if not params else "trainable" if flags == {True} else "frozen" if flags == {False} else "partly"
        opt, lr = "-", "-"
        if params and optimizer is not None:
            held = [p for p in params if id(p) in in_opt]
            opt = "yes" if len(held) == len(params) else "no" if not held else "partly"
            lrs = sorted({groups[in_opt[id(p)]].get("lr") for p in held} - {None})
            lr = ", ".join(f"{v:g}" for v in lrs) if lrs else "-"
        share = "-" if out is None else "unknown" if flops is None else \
            f"{100.0 * flops / total_flops:.1f}%" if total_flops else "0.0%"
        table.append((name, type(layer).__name__, shape_text(out) if out is not None else "?", f"{count:,}",
                      trainable, opt if optimizer is not None else "-", lr, share, algorithm or "-"))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    right = {3, 7}
    lines = ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in table]
    lines.insert(1, "-" * len(lines[0]))

    named = list(model.named_parameters())
    total = sum(p.size for _, p in named)
    trainable_count = sum(p.size for _, p in named if p.requires_grad)
    lines.append("-" * len(lines[0]))
    lines.append(f"parameters: {total:,} total, {trainable_count:,} trainable, {total - trainable_count:,} frozen")
    if input_shape is not None:
        lines.append(f"forward FLOPs for input {shape_text(input_shape)}: {total_flops:,}"
                     + (f" plus the unknown FLOPs of {', '.join(unknown)}" if unknown else ""))

    warnings = []
    if error is not None:
        warnings.append(f"WARNING: input_shape {shape_text(input_shape)} does not fit the model: {error}")
    if named and trainable_count == 0:
        warnings.append("WARNING: every parameter is frozen: training would change nothing")
    if optimizer is not None:
        model_ids = {id(p) for _, p in named}
        not_held = [n for n, p in named if p.requires_grad and id(p) not in in_opt]
        if not_held:
            warnings.append("WARNING: trainable parameters NOT in the optimizer (they get gradients but are never "
                            "updated; build the optimizer after replace_head/adapt_input_channels): "
                            + ", ".join(not_held))
        stale = sum(1 for pid in in_opt if pid not in model_ids)
        if stale:
            warnings.append(f"WARNING: the optimizer holds {stale} parameter(s) that are not in this model "
                            "(stale, e.g. a replaced head)")
        frozen_held = [n for n, p in named if not p.requires_grad and id(p) in in_opt]
        if frozen_held:
            warnings.append("note: frozen parameters held by the optimizer (harmless: SGD skips them while "
                            "frozen; they train once unfrozen): " + ", ".join(frozen_held))
    return "\n".join(lines + warnings)
