"""Training loop, evaluation and prediction: the seed's sections 4.3 and 4.5 as functions.

:func:`fit` runs the seed's loop, one step per mini-batch::

    model.train()
    outputs = model(inputs)                    # outputs = net(inputs)
    loss = criterion(outputs, labels)          # loss = criterion(outputs, labels)
    optimizer.zero_grad()                      # optimizer.zero_grad()
    model.backward(criterion.backward(),       # loss.backward()
                   need_input_grad=False)
    optimizer.step()                           # optimizer.step()

and adds what a long run needs: a :class:`History` of per-epoch metrics, evaluation on a
validation loader after each epoch, a progress bar, the seed's ``[epoch, batch] loss`` lines,
detection of a diverging (NaN or infinite) loss, and checkpoints from which a run resumes
*exactly*: training 2 epochs straight and training 1 epoch, stopping, and resuming from the
checkpoint in a fresh process give bit-identical parameters.

:class:`History` lives in :mod:`nnscratch.training.history`, the checkpoint files in
:mod:`nnscratch.training.checkpoint`.

:func:`evaluate` is the seed's section 4.5 (accuracy on a test set), plus the mean loss and
the confusion matrix; :func:`predict` gives class indices for a batch of images.
"""
import math
import numbers
import os
import sys
import time

import numpy as np

from .. import ops
from .checkpoint import find_diverged_parameter, load_checkpoint, save_checkpoint
from .history import History
from ..nn.module import inference

__all__ = [
    "ParametersDivergedError", "TrainingDivergedError", "evaluate", "fit", "forward_in_batches", "in_jupyter_kernel",
    "predict", "predict_proba", "show_progress_by_default",
]


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite (learning rate too high, bad inputs...).

    Raised before the diverged step updates any parameter; ``epoch`` (counting from 1),
    ``batch`` (index within the epoch, counting from 0) and ``loss`` say where.
    """

    def __init__(self, epoch, batch, loss, batches=None):
        self.epoch, self.batch, self.loss = epoch, batch, loss
        of = f" of {batches}" if batches is not None else ""
        super().__init__(
            f"training diverged: the loss is {loss} at epoch {epoch}, batch index {batch}{of} "
            f"(check the learning rate and the inputs)"
        )


class ParametersDivergedError(TrainingDivergedError):
    """The parameters diverged although every batch's loss was finite: at the end of epoch
    ``epoch`` the parameter ``parameter`` holds a NaN or an infinity, or a value of magnitude
    ``largest`` above ``fit(max_param_abs=...)``. Raised before that epoch's checkpoint is written,
    so the checkpoint file keeps the last good epoch (``batch`` and ``loss`` are ``None``).
    """

    def __init__(self, epoch, parameter, largest, limit, checkpoint):
        self.epoch, self.batch, self.loss = epoch, None, None
        self.parameter, self.largest, self.limit = parameter, largest, limit
        found = ("holds NaN or infinite values" if not math.isfinite(largest)
                 else f"reached |value| = {largest:.3g}, above the limit max_param_abs={limit:g}")
        FloatingPointError.__init__(
            self, f"training diverged: after epoch {epoch} the parameter {parameter} {found}. The checkpoint "
            f"{str(checkpoint)!r} was not overwritten and still holds the last good epoch; resume from it with a "
            f"lower learning rate (or check the inputs), or raise max_param_abs if such values are expected")


# ---------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------


def fit(model, criterion, optimizer, train_loader, epochs, val_loader=None, *, checkpoint=None,
        resume=None, scheduler=None, progress=None, log_every=None, callback=None, max_param_abs=1e6):
    """
    Train `model` until `epochs` epochs are completed; return the :class:`History`.

    Parameters
    ----------
    model : :class:`nnscratch.Module`
        The network; ``model(x)`` gives outputs of shape (N, classes).
    criterion : loss
        E.g. :class:`nnscratch.NLLLoss` (model ends in ``LogSoftmax``) or
        :class:`nnscratch.CrossEntropyLoss` (model outputs logits).
    optimizer : optimizer
        E.g. :class:`nnscratch.SGD` over the model's parameters; it must offer
        ``zero_grad``, ``step`` and, for checkpoints, ``state_dict``/``load_state_dict``.
    train_loader : iterable of ``(x, y)`` batches
        Typically a :class:`nnscratch.data.DataLoader`; iterated once per epoch.
    epochs : int
        Total number of epochs to have completed when ``fit`` returns, counting those done
        before a `resume` (resuming a 1-epoch checkpoint with ``epochs=3`` runs 2 more).
    val_loader : iterable of ``(x, y)`` batches, optional
        Evaluated (:func:`evaluate`) after every epoch into ``val_loss``/``val_accuracy``.
    scheduler : learning-rate scheduler, optional
        E.g. ``nnscratch.optim.lr_scheduler.StepLR(optimizer, step_size=10)``; ``scheduler.step()``
        is called after every epoch (after that epoch's optimizer steps and validation, PyTorch's
        order) and its state is saved in and restored from checkpoints.
    checkpoint : str or path, optional
        File rewritten atomically after every epoch with everything needed to resume.
    resume : str or path, optional
        A checkpoint to continue from: restores the parameters, optimizer and scheduler state, history,
        random generator states and the loader's epoch counter (may equal `checkpoint`).
    max_param_abs : float or None
        Before writing a checkpoint, the parameters are checked: one holding a NaN or an infinity,
        or a value of magnitude above `max_param_abs`, means the run has diverged (one extreme
        batch can blow the weights up to ~1e12 while the loss stays finite), and
        :class:`ParametersDivergedError` is raised instead of overwriting the last good
        checkpoint. The default 1e6 is far above the weights of a healthy network on normalized
        inputs (of order 1); raise it, or pass ``None`` to check only for NaN and infinity, for
        models whose weights are legitimately large (e.g. regression on unscaled targets).
    progress : bool or None
        A tqdm progress bar per epoch (loss, accuracy, samples/s); in a Jupyter kernel tqdm's
        notebook bar (``tqdm.auto``). ``None`` (default): when stderr is a terminal or inside a
        Jupyter kernel, unless the environment variable ``NNSCRATCH_PROGRESS`` is ``0`` (never)
        or ``1`` (always); ``False``: never; ``True``: always.
    log_every : int or None
        Print the seed's line ``[epoch, batch] loss: x.xxx`` every `log_every` batches, the
        loss averaged over those batches (the seed uses 2000).
    callback : callable, optional
        ``callback(epoch, history)`` after every epoch (and after its checkpoint), `epoch`
        counting from 1; returning ``True`` stops training.

    Returns
    -------
    history : :class:`History`

    Raises
    ------
    TrainingDivergedError
        The loss became NaN or infinite; the message names the epoch and batch. Its subclass
        :class:`ParametersDivergedError`: with a `checkpoint`, the parameters became non-finite or
        exceeded `max_param_abs` by the end of an epoch (that epoch's checkpoint is not written).
    ValueError
        A trainable parameter of the model is in no parameter group of the optimizer (it
        would never train: typically an optimizer built before ``transfer.replace_head``).
    """
    started = time.perf_counter()
    epochs = int(epochs)
    if epochs < 0:
        raise ValueError(f"fit: epochs must be >= 0, got {epochs}")
    if log_every is not None and int(log_every) < 1:
        raise ValueError(f"fit: log_every must be a positive integer or None, got {log_every}")
    if max_param_abs is not None and not (isinstance(max_param_abs, numbers.Real) and max_param_abs > 0):
        raise ValueError(f"fit: max_param_abs must be a positive number or None, got {max_param_abs!r}")
    show = show_progress_by_default() if progress is None else bool(progress)
    _check_optimizer_holds_the_trainable_parameters(model, optimizer)

    history, first_epoch = History(), 0
    if resume is not None:
        first_epoch, history = load_checkpoint(resume, model, optimizer, train_loader, scheduler=scheduler)

    for epoch in range(first_epoch + 1, epochs + 1):  # counting from 1, as the seed prints it
        epoch_started = time.perf_counter()
        loss, accuracy, batch_losses = _train_epoch(model, criterion, optimizer, train_loader, epoch, epochs, show,
                                                    log_every)
        history.batch_loss.extend(batch_losses)
        history.epoch_batches.append(len(batch_losses))
        history.train_loss.append(loss)
        history.train_accuracy.append(accuracy)
        if val_loader is not None:
            result = evaluate(model, criterion, val_loader)
            history.val_loss.append(result["loss"])
            history.val_accuracy.append(result["accuracy"])
        now = time.perf_counter()
        history.epoch_time.append(now - epoch_started)
        history.total_time += now - started
        started = now
        if scheduler is not None:
            scheduler.step()
        if checkpoint is not None:
            diverged = find_diverged_parameter(model, max_param_abs)
            if diverged is not None:
                raise ParametersDivergedError(epoch, *diverged, max_param_abs, checkpoint)
            save_checkpoint(checkpoint, model, optimizer, epoch=epoch, history=history, train_loader=train_loader,
                            scheduler=scheduler)
        if callback is not None and callback(epoch, history) is True:
            break
    history.total_time += time.perf_counter() - started
    return history


def in_jupyter_kernel():
    """True when running inside a Jupyter kernel (notebook, JupyterLab, VS Code...): IPython is
    loaded and its shell has a kernel. Never imports IPython itself."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return getattr(shell, "kernel", None) is not None


def show_progress_by_default():
    """``fit(progress=None)``: the environment variable ``NNSCRATCH_PROGRESS`` (``0`` or ``1``) if
    set, else whether stderr is a terminal or the code runs in a Jupyter kernel."""
    setting = os.environ.get("NNSCRATCH_PROGRESS", "").strip()
    if setting:
        if setting not in ("0", "1"):
            raise ValueError(f"the environment variable NNSCRATCH_PROGRESS must be 0 or 1, got {setting!r}")
        return setting == "1"
    return sys.stderr.isatty() or in_jupyter_kernel()


def _progress_bar_class(show):
    """tqdm's notebook-aware bar for a bar shown in a Jupyter kernel (a text bar there if ipywidgets
    is missing), its terminal bar otherwise."""
    if show and in_jupyter_kernel():
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm


def _check_optimizer_holds_the_trainable_parameters(model, optimizer):
    """Raise if a trainable parameter of `model` is in none of the optimizer's parameter groups
    (frozen ones may be absent). Optimizers without ``param_groups`` or ``parameters()`` are not checked."""
    if hasattr(optimizer, "param_groups"):
        held = {id(param) for group in optimizer.param_groups for param in group["params"]}
    elif hasattr(optimizer, "parameters"):
        held = {id(param) for param in optimizer.parameters()}
    else:
        return
    missing = [name for name, param in model.named_parameters() if param.requires_grad and id(param) not in held]
    if missing:
        add = (" or add them with optimizer.add_param_group({'params': [...]})"
               if hasattr(optimizer, "add_param_group") else "")
        raise ValueError(
            f"fit: the trainable parameters {', '.join(missing)} are in no parameter group of the optimizer, so "
            "they would never be updated. Was the optimizer built before transfer.replace_head (or "
            "adapt_input_channels)? Build the optimizer after replace_head, e.g. "
            f"{type(optimizer).__name__}(model.parameters(), ...),{add}; or freeze them if they should not train")


def _train_epoch(model, criterion, optimizer, loader, epoch, epochs, show, log_every):
    """One pass over `loader`; returns (mean loss per sample, accuracy, the loss of each batch)."""
    tqdm = _progress_bar_class(show)
    batches = len(loader) if hasattr(loader, "__len__") else None
    total_loss, correct, count = 0.0, 0, 0
    running_loss, running_batches = 0.0, 0
    batch_losses = []
    started = time.perf_counter()
    with tqdm(total=batches, desc=f"epoch {epoch}/{epochs}", unit="batch", disable=not show,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for i, (x, y) in enumerate(loader):
            model.train()
            outputs = model(x)
            loss = criterion(outputs, y)
            if not math.isfinite(loss):
                raise TrainingDivergedError(epoch, i, loss, batches)
            optimizer.zero_grad()
            model.backward(criterion.backward(), need_input_grad=False)
            optimizer.step()

            batch_losses.append(float(loss))
            n = len(y)
            total_loss += loss * n if getattr(criterion, "reduction", "mean") == "mean" else loss
            right = _count_correct(outputs, y)
            correct = None if correct is None or right is None else correct + right
            count += n
            running_loss += loss
            running_batches += 1
            if log_every is not None and running_batches == log_every:
                line = "[%d, %5d] loss: %.3f" % (epoch, i + 1, running_loss / log_every)
                if show:
                    bar.write(line, file=sys.stdout)  # above the bar instead of through it
                else:
                    print(line, flush=True)
                running_loss, running_batches = 0.0, 0
            if show:
                elapsed = time.perf_counter() - started
                bar.set_postfix(loss=f"{total_loss / count:.4f}", acc="-" if correct is None else f"{correct / count:.2%}",
                                samples_s=f"{count / elapsed:.0f}" if elapsed > 0 else "-", refresh=False)
                bar.update(1)
    if count == 0:
        raise ValueError(f"fit: the training loader yielded no samples in epoch {epoch}")
    return total_loss / count, math.nan if correct is None else correct / count, batch_losses


def _count_correct(outputs, y):
    """Samples whose argmax output is the label (``y`` class indices, or one-hot / probability
    rows of the outputs' shape); ``None`` when the targets are not classes (e.g. regression)."""
    y = np.asarray(y)
    if outputs.ndim != 2:
        return None
    if y.ndim == 1 and y.dtype.kind in "iu":
        return int(np.count_nonzero(np.argmax(outputs, axis=1) == y))
    if y.shape == outputs.shape:
        return int(np.count_nonzero(np.argmax(outputs, axis=1) == np.argmax(y, axis=1)))
    return None


# ---------------------------------------------------------------------------
# evaluation and prediction
# ---------------------------------------------------------------------------


def evaluate(model, criterion, loader):
    """
    The seed's section 4.5: run `model` in eval mode over `loader` and measure it.

    Parameters
    ----------
    model : :class:`nnscratch.Module`
        Outputs (N, classes). Run as in eval mode inside :func:`nnscratch.nn.module.inference`: no
        module's ``training`` flag changes and the model keeps no activations afterwards, so
        several threads may evaluate one model at once.
    criterion : loss or None
        Gives the mean loss; ``None`` skips it (``loss`` is then ``None``).
    loader : iterable of ``(x, y)`` batches

    Returns
    -------
    result : dict
        ``loss`` (mean over samples), ``accuracy`` (fraction right, from the argmax as
        the seed's ``torch.max(outputs, 1)``), ``confusion`` (int64 array classes × classes,
        ``confusion[true, predicted]``: rows are true labels, so each row sums to the number
        of samples of that class) and ``count`` (number of samples).
    """
    total_loss, count, confusion = 0.0, 0, None
    with inference():
        for x, y in loader:
            outputs = model(x)
            y = np.asarray(y).astype(np.int64, copy=False)
            if criterion is not None:
                loss = criterion(outputs, y)
                total_loss += loss * len(y) if getattr(criterion, "reduction", "mean") == "mean" else loss
            classes = outputs.shape[1]
            if confusion is None:
                confusion = np.zeros((classes, classes), dtype=np.int64)
            if y.size and (y.min() < 0 or y.max() >= classes):
                raise ValueError(f"evaluate: labels must lie in [0, {classes}), got {y.min()}..{y.max()}")
            predicted = np.argmax(outputs, axis=1)
            confusion += np.bincount(y * classes + predicted, minlength=classes * classes).reshape(classes, classes)
            count += len(y)
    if count == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return {
        "loss": total_loss / count if criterion is not None else None,
        "accuracy": float(np.trace(confusion)) / count,
        "confusion": confusion,
        "count": count,
    }


def forward_in_batches(model, images, batch_size=256, transform=None, caller="forward_in_batches"):
    """Outputs of `model` for `images`, computed as in eval mode (dropout off) `batch_size` images at
    a time and concatenated, inside :func:`nnscratch.nn.module.inference`: no module's ``training`` flag
    changes and the model keeps no activations, so threads may share the model. `transform` (e.g.
    :func:`nnscratch.data.prepare_images`) is applied to each batch first. `caller` names the
    function in error messages."""
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"{caller}: batch_size must be a positive int, got {batch_size!r}")
    images = np.asarray(images)
    if len(images) == 0:
        raise ValueError(f"{caller}: got no images")
    chunks = []
    with inference():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            chunks.append(model(x if transform is None else transform(x)))
    return np.concatenate(chunks)


def predict(model, images, batch_size=256, transform=None):
    """Class indices (int64, shape (N,)) for `images`: argmax of the outputs in eval mode,
    in batches of `batch_size`; `transform` (e.g. :func:`nnscratch.data.prepare_images`) is
    applied to each batch first."""
    return np.argmax(forward_in_batches(model, images, batch_size, transform, "predict"), axis=1).astype(np.int64)


def predict_proba(model, images, batch_size=256, transform=None):
    """Class probabilities (N, classes): softmax of the outputs in eval mode. Right for a model
    ending in ``LogSoftmax`` (softmax of log-probabilities gives the probabilities back) as
    well as for one outputting logits."""
    outputs = forward_in_batches(model, images, batch_size, transform, "predict_proba")
    return ops.softmax(outputs, dim=1, where="predict_proba")
