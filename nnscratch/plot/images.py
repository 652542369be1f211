"""Grids of images (:func:`images`, :func:`filters`) and what every layer of a network outputs (:func:`feature_maps`)."""
import math

import numpy as np

from ..nn.container import Sequential
from .figure import BAR_LIMIT, CELL, _figure, _image_list, _symmetric_scale, _weights


def _image_grid(arrays, titles, ncols, cmap, symmetric, suptitle):
    count = len(arrays)
    ncols = max(1, min(count, ncols or 8))
    nrows = math.ceil(count / ncols)
    fig = _figure(CELL * ncols + (0.8 if symmetric else 0), CELL * nrows + (0.4 if suptitle else 0))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.remove()
    axes = axes[:count]
    colours = _symmetric_scale(arrays) if symmetric else {"cmap": cmap or "gray"}
    for i, (ax, array) in enumerate(zip(axes, arrays)):
        shown = ax.imshow(array, interpolation="nearest", **colours)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if symmetric:
        fig.colorbar(shown, ax=list(axes), shrink=0.8)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def images(arrays, titles=None, *, ncols=None, cmap=None, symmetric=False, suptitle=None):
    """A grid of 2-D images, ``ncols`` per row (default up to 8), each titled by ``titles``.

    ``arrays``: (N, H, W), (N, 1, H, W), or a list of 2-D arrays (sizes may differ: e.g. an image
    and its pooled versions). Each image gets its own grey scale (``cmap`` default "gray"): the
    darkest pixel is its smallest value, the lightest its largest. With ``symmetric=True`` every
    image shares one diverging scale centred on 0 (blue negative, white zero, red positive, the
    colour bar gives the values): use it for filters, gradients and signed feature maps.
    """
    arrays = _image_list(arrays, "images")
    if titles is not None and len(titles) != len(arrays):
        raise ValueError(f"plot.images: {len(titles)} titles for {len(arrays)} images")
    return _image_grid(arrays, titles, ncols, cmap, symmetric, suptitle)


def filters(layer_or_weights, *, in_channel=0, ncols=None, title=None):
    """The kernels of a convolution, one small image per output channel, titled by its index.

    ``layer_or_weights``: a Conv2d, its ``weight`` Parameter, or an array (O, I, kh, kw) (the
    kernels applied to input channel ``in_channel`` are shown) or (O, kh, kw). One diverging
    scale for all: red weights respond to bright pixels, blue ones to dark pixels, white ignore
    them; a kernel red on one side and blue on the other detects an edge across that direction.
    """
    weights = _weights(layer_or_weights)
    if weights.ndim == 4:
        if not 0 <= in_channel < weights.shape[1]:
            raise ValueError(f"plot.filters: in_channel={in_channel}, but the weights of shape {weights.shape} "
                             f"have {weights.shape[1]} input channel(s)")
        weights, what = weights[:, in_channel], f", input channel {in_channel}"
    elif weights.ndim == 3:
        what = ""
    else:
        raise ValueError(f"plot.filters: expected weights of shape (O, I, kh, kw) or (O, kh, kw), got {weights.shape}")
    out, height, width = weights.shape
    title = title or f"{out} filters {height}×{width}{what}"
    return _image_grid(list(weights), [str(i) for i in range(out)], ncols, None, True, title)


# ---------------------------------------------------------------------------------------------
# Inside a network
# ---------------------------------------------------------------------------------------------

def feature_maps(model, image, *, max_maps=8, layers=None):
    """What every layer of ``model`` outputs for ONE image, one row per layer, the input first.

    ``image``: (C, H, W) or (1, C, H, W), prepared as for training (floats, e.g.
    ``nnscratch.data.prepare_images(raw)[0]``). ``model``: a Sequential (seed_net,
    keras_transfer_net, your own); ``layers``: names of the layers to show (default all).
    The model runs in eval mode (dropout off) and gets its own modes back afterwards.

    Image-shaped outputs (C, H, W) show their first ``max_maps`` channels. A row whose values
    are all >= 0 (after ReLU, pooling) is grey from 0 (black) to its largest value (white); a
    signed row (a convolution's output) is blue negative / red positive around 0. Vectors
    (after Flatten or a Dense layer) are a bar per value, or a colour strip when long.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"plot.feature_maps: expected a Sequential (its layers run one after another), "
                        f"got {type(model).__name__}")
    x = np.asarray(image)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"plot.feature_maps: expected ONE image of shape (C, H, W) or (1, C, H, W), "
                         f"got shape {np.shape(image)}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"plot.feature_maps: the image is {x.dtype}; pass it as the model sees it in training, "
                        "e.g. nnscratch.data.prepare_images(raw_images)[i]")
    names = model.names()
    wanted = names if layers is None else list(layers)
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise ValueError(f"plot.feature_maps: no layer named {unknown}; the model's layers are {names}")
    rows, output = [("input", x)], x[None]
    with model.eval_mode():
        for name, layer in model.named_children():
            output = layer(output)
            if name in wanted:
                rows.append((name, output[0]))

    fig = _figure(1.0 * max_maps + 1.2, 1.0 * len(rows))
    grid = fig.add_gridspec(len(rows), max_maps)
    for row, (name, values) in enumerate(rows):
        label = f"{name}\n{'×'.join(map(str, values.shape))}"
        if values.ndim == 3:
            maps = values[:max_maps]
            colours = _symmetric_scale(maps) if maps.min() < 0 else {"cmap": "gray", "vmin": 0,
                                                                     "vmax": float(maps.max()) or 1.0}
            panels = [fig.add_subplot(grid[row, c]) for c in range(len(maps))]
            for ax, one_map in zip(panels, maps):
                ax.imshow(one_map, interpolation="nearest", **colours)
        else:
            panels = [fig.add_subplot(grid[row, :])]
            _vector_strip(panels[0], values.ravel())
        for ax in panels:
            ax.set_xticks([])
            ax.set_yticks([])
        panels[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    return fig


def _vector_strip(ax, vector):
    if vector.size <= BAR_LIMIT:
        ax.bar(np.arange(vector.size), vector, width=0.9, color=np.where(vector < 0, "tab:blue", "tab:red"))
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xlim(-0.5, vector.size - 0.5)
    else:
        ax.imshow(vector[None], aspect="auto", interpolation="nearest", **_symmetric_scale([vector]))

