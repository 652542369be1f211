"""Feature extraction: a (pre-trained) network as a fixed feature extractor."""
from ..training import forward_in_batches
from .surgery import cut_before


def extract_features(model, images, before, batch_size=256, transform=None):
    """
    Use a (pre-trained) network as a fixed feature extractor.

    Runs `images` forward through ``cut(model, before)`` in eval mode (dropout off), in
    batches, and returns the activations. Nothing is trained and no backward runs; each
    module's training/eval mode is restored afterwards. The features can then train
    another model (a new ``Dense`` head, a linear classifier...) at a fraction of the
    cost of running the body at every epoch.

    Parameters
    ----------
    model : :class:`~nnscratch.Sequential`
    images : ndarray, shape (N, C, H, W)
        Prepared float inputs (or raw ones with `transform`).
    before : str or int
        The first layer *not* run (see :func:`cut`): the features are what feeds it; e.g.
        ``before="fc2"`` for the seed's Net gives the 128 features feeding its classifier.
    batch_size : int
        Images per forward pass.
    transform : callable, optional
        Applied to each batch first (e.g. :func:`nnscratch.data.prepare_images`).

    Returns
    -------
    features : ndarray, shape (N, ...)
    """
    return forward_in_batches(cut_before(model, before, "extract_features"), images, batch_size, transform,
                              "extract_features")
