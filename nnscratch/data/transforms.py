"""Transforms: uint8 images ``(N, H, W)`` to float32 network inputs ``(N, 1, H, W)``, the seed's
``(x/255 - 0.5)/0.5`` (:func:`to_float`, :class:`Normalize`, :func:`prepare_images`)."""
import numpy as np


def to_float(images):
    """
    Convert uint8 images to float32 in [0, 1] with a channel axis.

    Parameters
    ----------
    images : :py:class:`ndarray <numpy.ndarray>` of shape `(N, H, W)` or `(N, C, H, W)`
        uint8 pixel values.

    Returns
    -------
    x : :py:class:`ndarray <numpy.ndarray>` of shape `(N, 1, H, W)` or `(N, C, H, W)`
        float32 values ``images / 255``.

    Raises
    ------
    ValueError
        If `images` is not uint8 or not 3- or 4-dimensional.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"to_float expects uint8 images, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim != 4:
        raise ValueError(
            f"to_float expects images of shape (N, H, W) or (N, C, H, W), got {images.shape}"
        )
    x = images.astype(np.float32)
    x /= 255
    return x


class Normalize:
    """
    Standardize inputs: ``(x - mean) / std`` in float32.

    Parameters
    ----------
    mean : float or sequence of float
        A scalar, or one value per channel of `(N, C, H, W)` inputs.
    std : float or sequence of float
        Same form as `mean`; every value must be positive.
    """

    def __init__(self, mean, std):
        self.mean, self.std = mean, std
        self._mean = self._per_channel(mean)
        self._std = self._per_channel(std)
        if np.any(self._std <= 0):
            raise ValueError(f"Normalize: std must be positive, got {std}")

    @staticmethod
    def _per_channel(value):
        value = np.asarray(value, dtype=np.float32)
        if value.ndim == 1:  # one value per channel: broadcast over (C, H, W)
            value = value.reshape(-1, 1, 1)
        return value

    def __call__(self, x):
        out = np.subtract(x, self._mean, dtype=np.float32)
        out /= self._std
        return out

    def __repr__(self):
        return f"Normalize(mean={self.mean!r}, std={self.std!r})"


def prepare_images(images, mean=0.5, std=0.5):
    """
    uint8 images to normalized float32 network inputs, in one call.

    With the defaults this is ``(images / 255 - 0.5) / 0.5``, mapping pixel
    values to [-1, 1]. Usable as a :class:`DataLoader` `transform`.

    Parameters
    ----------
    images : :py:class:`ndarray <numpy.ndarray>` of shape `(N, H, W)` or `(N, C, H, W)`
        uint8 pixel values.
    mean : float or sequence of float
        Subtracted after scaling to [0, 1]. Default is 0.5.
    std : float or sequence of float
        Divided by after subtracting `mean`. Default is 0.5.

    Returns
    -------
    x : :py:class:`ndarray <numpy.ndarray>` of shape `(N, C, H, W)`
        float32 inputs, with ``C = 1`` for 3-dimensional `images`.
    """
    return Normalize(mean, std)(to_float(images))
