"""Tasks derived from MNIST for studying when transfer fails: shifted inputs, changed labels.

Transfer learning assumes that what a network learned on a source task is useful for the
target. The seed article (section 5 and its Q4, summarized in docs/seed.md) names the two ways
this breaks: the target *data* differ from the pre-training data (data mismatch), or the target
*task* is unrelated to the source.
Both can be built from MNIST alone, so nothing is downloaded:

* **input shifts** (:func:`shifts`) keep each image's label and change its pixels or its
  normalization: :func:`invert` (white digit on black becomes black on white), :func:`rotate90`,
  :func:`permute_pixels` (one fixed shuffle of the 784 pixel positions, the same for every
  image), and the wrong normalization ``x / 255`` in place of the article's
  ``(x / 255 - 0.5) / 0.5`` (section 4.1);
* **label changes** keep the images and change the task: :func:`parity_labels` (is the digit
  odd?) and :func:`random_labels` (no task at all: a network can only memorize them).

Every pixel function takes uint8 images ``(N, H, W)`` or ``(N, C, H, W)`` and returns uint8
images of the same shape, so that :func:`nnscratch.data.prepare_images` still applies to them.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .transforms import prepare_images, to_float


def _uint8_images(images, function):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"data_shifts.{function}: expected uint8 images of shape (N, H, W) or (N, C, H, W), "
                         f"got {images.dtype} of shape {images.shape}; shift the raw images, then prepare_images")
    return images


def invert(images):
    """Photographic negative: pixel ``x`` becomes ``255 - x``.

    Under the article's normalization ``z = (x / 255 - 0.5) / 0.5`` this is, mathematically,
    ``z -> -z``. In float32, ``prepare_images(255 - x)`` equals ``-prepare_images(x)`` exactly for
    black, white and half of the gray levels, and within one rounding step (6e-8) for the others
    (``x / 255`` is rounded before 0.5 is subtracted)."""
    return 255 - _uint8_images(images, "invert")


def rotate90(images, k=1):
    """Each image turned by ``k`` quarter turns counter-clockwise (``numpy.rot90`` on the last two axes)."""
    images = _uint8_images(images, "rotate90")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"data_shifts.rotate90: images must be square, got {images.shape[-2:]}")
    return np.ascontiguousarray(np.rot90(images, k, axes=(-2, -1)))


def pixel_permutation(num_pixels=28 * 28, seed=0):
    """A fixed random order of ``num_pixels`` pixel positions (a seeded permutation of ``0..num_pixels-1``)."""
    if int(num_pixels) != num_pixels or num_pixels < 1:
        raise ValueError(f"data_shifts.pixel_permutation: num_pixels must be a positive integer, got {num_pixels}")
    return np.random.default_rng(seed).permutation(int(num_pixels))


def permute_pixels(images, permutation):
    """Every image's pixels reordered by the same ``permutation``: ``out.flat[i] = image.flat[permutation[i]]``.

    Neighbouring pixels end up far apart, so the image is noise to the eye and to a convolution,
    whose 3x3 windows relied on neighbourhoods. A dense layer does not care about order: feeding
    it ``x[permutation]`` and using the weight columns ``W[:, permutation]`` computes the same sums."""
    images = _uint8_images(images, "permute_pixels")
    permutation = np.asarray(permutation)
    size = int(np.prod(images.shape[1:]))
    if permutation.shape != (size,) or not np.array_equal(np.sort(permutation), np.arange(size)):
        raise ValueError(f"data_shifts.permute_pixels: permutation must reorder 0..{size - 1} (one entry per "
                         f"pixel of a {images.shape[1:]} image), got shape {permutation.shape}; "
                         f"use pixel_permutation({size})")
    return images.reshape(len(images), size)[:, permutation].reshape(images.shape)


def parity_labels(digits):
    """The parity task: 1 for an odd digit, 0 for an even one (int64).

    Takes the *digits* 0-9 (for a subset relabelled by ``subset_by_labels``, map the labels back first)."""
    digits = np.asarray(digits)
    if digits.ndim != 1 or not np.issubdtype(digits.dtype, np.integer) or digits.min(initial=0) < 0 \
            or digits.max(initial=0) > 9:
        raise ValueError(f"data_shifts.parity_labels: expected a 1-D array of digits 0-9, got {digits.dtype} "
                         f"of shape {digits.shape}")
    return (digits % 2).astype(np.int64)


def random_labels(count, num_classes, seed=0):
    """``count`` labels drawn uniformly from ``0..num_classes-1``, independent of any image (int64).

    A network can fit them only by memorizing each training image; nothing it learns can help
    on new images, whose labels are just as random (test accuracy ``1 / num_classes``)."""
    if int(count) != count or count < 0 or int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"data_shifts.random_labels: need count >= 0 and num_classes >= 2, got {count}, {num_classes}")
    return np.random.default_rng(seed).integers(0, int(num_classes), size=int(count), dtype=np.int64)


@dataclass(frozen=True)
class Shift:
    """An input shift: ``shift(images)`` gives network inputs, ``transform(pixels(images))``.

    ``pixels`` maps uint8 images to uint8 images; ``transform`` maps uint8 images to float32
    inputs (the article's :func:`~nnscratch.data.prepare_images`, except for the normalization shift)."""

    name: str
    description: str
    pixels: Callable
    transform: Callable = prepare_images

    def __call__(self, images):
        return self.transform(self.pixels(images))


def _unchanged(images):
    return _uint8_images(images, "none")


def shifts(permutation_seed=0):
    """The input shifts of the study, by name, in order: ``none`` (the reference), ``inverted``,
    ``rotated 90°``, ``permuted`` (:func:`pixel_permutation` of ``permutation_seed``) and ``x/255``."""
    permutation = pixel_permutation(28 * 28, permutation_seed)
    table = [
        Shift("none", "the article's inputs, (x/255 - 0.5)/0.5", _unchanged),
        Shift("inverted", "255 - x: black digit on white", invert),
        Shift("rotated 90°", "a quarter turn counter-clockwise", rotate90),
        Shift("permuted", f"one fixed pixel shuffle (seed {permutation_seed})",
              lambda images: permute_pixels(images, permutation)),
        Shift("x/255", "wrong normalization: x/255 in [0, 1] instead of [-1, 1]", _unchanged, to_float),
    ]
    return {shift.name: shift for shift in table}
