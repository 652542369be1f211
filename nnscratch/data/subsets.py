"""Subsets: carve smaller datasets out of a bigger one (:func:`subset_by_labels`,
:func:`per_class_subset`, :func:`train_val_split`)."""
import numpy as np

from .loader import _check_images_labels


def subset_by_labels(images, labels, keep, remap=True):
    """
    Keep the samples whose label is in `keep`.

    Parameters
    ----------
    images : :py:class:`ndarray <numpy.ndarray>` of shape `(N, ...)`
        The inputs.
    labels : :py:class:`ndarray <numpy.ndarray>` of shape `(N,)`
        Integer labels.
    keep : sequence of int
        The labels to keep, without duplicates, e.g. ``[5, 6, 7, 8, 9]``.
    remap : bool
        Whether to relabel ``keep[i]`` as ``i``. Default is True.

    Returns
    -------
    images : :py:class:`ndarray <numpy.ndarray>` of shape `(M, ...)`
        A new array with the kept samples, in their original order.
    labels : :py:class:`ndarray <numpy.ndarray>` of shape `(M,)`
        Their labels: int64 in ``0 .. len(keep) - 1`` if `remap`, else the
        original labels.
    """
    images, labels = _check_images_labels(images, labels)
    keep = [int(label) for label in keep]
    if not keep or len(set(keep)) != len(keep):
        raise ValueError(f"keep must be a non-empty list of distinct labels, got {keep}")
    mask = np.isin(labels, keep)
    kept_labels = labels[mask]
    if remap:
        remapped = np.empty(len(kept_labels), dtype=np.int64)
        for new_label, old_label in enumerate(keep):
            remapped[kept_labels == old_label] = new_label
        kept_labels = remapped
    return images[mask], kept_labels


def per_class_subset(images, labels, per_class, seed=0):
    """
    A seeded random sample of `per_class` examples of every class.

    Parameters
    ----------
    images : :py:class:`ndarray <numpy.ndarray>` of shape `(N, ...)`
        The inputs.
    labels : :py:class:`ndarray <numpy.ndarray>` of shape `(N,)`
        Labels; every distinct value is a class.
    per_class : int or None
        Examples to draw from each class; None keeps everything.
    seed : int
        Seed of the draw. Default is 0.

    Returns
    -------
    images : :py:class:`ndarray <numpy.ndarray>` of shape `(M, ...)`
        New array of the chosen samples, in their original order.
    labels : :py:class:`ndarray <numpy.ndarray>` of shape `(M,)`
        Their labels.

    Raises
    ------
    ValueError
        If some class has fewer than `per_class` examples.
    """
    images, labels = _check_images_labels(images, labels)
    if per_class is None:
        return images.copy(), labels.copy()
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(
                f"class {label} has {len(members)} examples, fewer than per_class={per_class}"
            )
        chosen.append(rng.choice(members, size=per_class, replace=False))
    index = np.sort(np.concatenate(chosen))
    return images[index], labels[index]


def train_val_split(images, labels, *, val_fraction=None, n_val=None, seed=0):
    """
    Split a dataset at random into training and validation parts.

    Give exactly one of `val_fraction` and `n_val`.

    Parameters
    ----------
    images : :py:class:`ndarray <numpy.ndarray>` of shape `(N, ...)`
        The inputs.
    labels : :py:class:`ndarray <numpy.ndarray>` of shape `(N,)`
        The labels.
    val_fraction : float or None
        Fraction of samples for validation, in [0, 1]; the count is
        rounded to the nearest integer.
    n_val : int or None
        Number of samples for validation, in ``0 .. N``.
    seed : int
        Seed of the split. Default is 0.

    Returns
    -------
    train : tuple of :py:class:`ndarray <numpy.ndarray>`
        ``(images, labels)`` of the training part, in original order.
    val : tuple of :py:class:`ndarray <numpy.ndarray>`
        ``(images, labels)`` of the validation part, in original order.
    """
    images, labels = _check_images_labels(images, labels)
    n = len(labels)
    if (val_fraction is None) == (n_val is None):
        raise ValueError("give exactly one of val_fraction and n_val")
    if val_fraction is not None:
        if not 0 <= val_fraction <= 1:
            raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
        n_val = round(val_fraction * n)
    if not 0 <= n_val <= n:
        raise ValueError(f"n_val must be in 0..{n}, got {n_val}")
    order = np.random.default_rng(seed).permutation(n)
    val_index, train_index = np.sort(order[:n_val]), np.sort(order[n_val:])
    return (
        (images[train_index], labels[train_index]),
        (images[val_index], labels[val_index]),
    )
