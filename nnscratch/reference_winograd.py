"""Winograd minimal filtering for 3×3, stride-1 convolutions (Lavin & Gray 2016), written as its formula.

One output tile ``Y`` of ``m × m`` pixels of a 3×3 convolution needs an input tile ``d`` of
``α × α`` pixels, ``α = m + 2``. Winograd's algorithm F(m×m, 3×3) computes it as

.. math::
    Y = A^T \\Big[ \\sum_c (G\\, g_{f,c}\\, G^T) \\odot (B^T d_c\\, B) \\Big] A

with ``g_{f,c}`` the 3×3 filter ``w[f, c]``, ``⊙`` the element-wise product and the constant
matrices below (``B^T`` α×α, ``G`` α×3, ``A^T`` m×α). The sum over channels is, for each of the
α² positions ``(a, b)`` of the transformed tile, one matrix product over channels: α² independent
GEMMs ``M[a,b] (F × tiles) = U[a,b] (F × C) · V[a,b] (C × tiles)``. Per output pixel that is
α²/m² multiplications per (f, c) pair instead of the direct method's 9: 4 for F(2×2, 3×3)
(2.25× fewer), 2.25 for F(4×4, 3×3) (4× fewer). The price is rounding: the transforms scale
and cancel values (B^T of F(4×4) holds 4 and -5, A^T holds 8), so float32 results carry a
larger error than the direct sum (measured in ``docs/fast_convolution.md``, bounded in
``tests/test_winograd.py``).

The output is cut into ``⌈OH/m⌉ × ⌈OW/m⌉`` tiles; the last row and column of tiles may reach
past the output (the input is zero-padded far enough) and are cropped. Gradients:

* ``∂L/∂x`` is the full correlation of ``∂L/∂y`` with the filters turned by 180° and their
  in/out channels swapped, ``w'[c, f, p, q] = w[f, c, 2-p, 2-q]``, with padding ``2 - P``:
  itself a 3×3 stride-1 convolution, computed by the same Winograd forward;
* ``∂L/∂w`` follows the forward's transforms backwards (their transposes, the adjoint):
  ``∂L/∂U[f,c] = Σ_{n,tiles} (A ∂L/∂Y A^T) ⊙ (B^T d_c B)`` and ``∂L/∂g = G^T (∂L/∂U) G``.

The filter transform ``G g G^T`` (and ``G^T (∂L/∂U) G``) is computed in float64 and rounded
once to the working dtype: ``G`` holds 1/6, 1/12, 1/24, which float32 cannot represent. The
compiled kernels (``nnscratch/_kernels_winograd.pxi``) call these same two functions, so
both backends start from the same transformed filters.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

TILE_SIZES = (2, 4)  # m of F(m×m, 3×3)

# F(2, 3): four multiplications for two outputs of a 3-tap filter (docs/fast_convolution.md works it by hand)
BT_2 = np.array([[1, 0, -1, 0],
                 [0, 1, 1, 0],
                 [0, -1, 1, 0],
                 [0, 1, 0, -1]], dtype=np.float64)
G_2 = np.array([[1, 0, 0],
                [1 / 2, 1 / 2, 1 / 2],
                [1 / 2, -1 / 2, 1 / 2],
                [0, 0, 1]], dtype=np.float64)
AT_2 = np.array([[1, 1, 1, 0],
                 [0, 1, -1, -1]], dtype=np.float64)

# F(4, 3), interpolation points 0, ±1, ±2, ∞ (Lavin & Gray 2016, section 4.2)
BT_4 = np.array([[4, 0, -5, 0, 1, 0],
                 [0, -4, -4, 1, 1, 0],
                 [0, 4, -4, -1, 1, 0],
                 [0, -2, -1, 2, 1, 0],
                 [0, 2, -1, -2, 1, 0],
                 [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G_4 = np.array([[1 / 4, 0, 0],
                [-1 / 6, -1 / 6, -1 / 6],
                [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6],
                [1 / 24, -1 / 12, 1 / 6],
                [0, 0, 1]], dtype=np.float64)
AT_4 = np.array([[1, 1, 1, 1, 1, 0],
                 [0, 1, -1, 2, -2, 0],
                 [0, 1, 1, 4, 4, 0],
                 [0, 1, -1, 8, -8, 1]], dtype=np.float64)


def matrices(m):
    """``(B^T, G, A^T)`` of F(m×m, 3×3), m in ``TILE_SIZES``, as float64 arrays."""
    return {2: (BT_2, G_2, AT_2), 4: (BT_4, G_4, AT_4)}[m]


def tile_grid(out_h, out_w, m):
    """``(TH, TW)``: tiles of m×m output pixels covering an ``out_h × out_w`` output."""
    return -(-out_h // m), -(-out_w // m)


def transform_filters(weight, m):
    """``U[ab, f, c] = (G w[f, c] G^T)[a, b]``, ``ab = a α + b``, computed in float64 as one matrix product
    ``U = (G ⊗ G) · w`` with ``w`` read as a (9, F·C) matrix (the Kronecker product ``G ⊗ G`` holds
    ``G[a, p] G[b, q]`` at row ``ab``, column ``pq = 3 p + q``), returned in ``weight``'s dtype:
    C-contiguous (α², F, C), the layout of the compiled kernels' GEMMs.

    (``np.einsum`` without ``optimize`` runs its own loops: NumPy's multi-threaded BLAS, called for
    this small product, took 10× longer on a busy machine, waiting for its threads.)"""
    _, g, _ = matrices(m)
    f, c = weight.shape[:2]
    w = np.ascontiguousarray(weight.reshape(f * c, 9).T, dtype=np.float64)
    return np.einsum("kp,pi->ki", np.kron(g, g), w).reshape(-1, f, c).astype(weight.dtype)


def filter_gradient(grad_u, m):
    """``∂L/∂w[f, c] = G^T ∂L/∂U[:, f, c] G`` (the adjoint of :func:`transform_filters`: the transposed
    product ``(G ⊗ G)^T · ∂L/∂U``), from ``grad_u`` (α², F, C), computed in float64, returned in
    ``grad_u``'s dtype (F, C, 3, 3)."""
    _, g, _ = matrices(m)
    alpha2, f, c = grad_u.shape
    grad_w = np.einsum("kp,ki->ip", np.kron(g, g), grad_u.reshape(alpha2, f * c).astype(np.float64))
    return grad_w.reshape(f, c, 3, 3).astype(grad_u.dtype)


def _input_tiles(x, padding, m, out_hw):
    """``d[n, c, t, u] = x_pad[n, c, t m : t m + α, u m : u m + α]`` (N, C, TH, TW, α, α): ``x`` placed
    at offset ``padding`` (negative: cropped) in a zero array just large enough for every tile."""
    n, c, h, w = x.shape
    (ph, pw), (th, tw) = padding, tile_grid(*out_hw, m)
    rows, cols = th * m + 2, tw * m + 2
    x_pad = np.zeros((n, c, rows, cols), dtype=x.dtype)
    r0, r1, c0, c1 = max(0, -ph), min(h, rows - ph), max(0, -pw), min(w, cols - pw)
    if r1 > r0 and c1 > c0:
        x_pad[:, :, r0 + ph:r1 + ph, c0 + pw:c1 + pw] = x[:, :, r0:r1, c0:c1]
    return sliding_window_view(x_pad, (m + 2, m + 2), axis=(2, 3))[:, :, ::m, ::m]


def _cast(matrix, dtype):
    return matrix.astype(dtype)  # the integer matrices B^T, A^T are exact in float32


def conv2d_forward(x, weight, bias, padding, m=4):
    """F(m×m, 3×3) Winograd convolution, stride 1: the same ``y`` as
    :func:`nnscratch.reference.conv2d_forward` up to rounding.

    ``V = B^T d B`` per input tile and channel; ``M[a,b] = Σ_c U[a,b,f,c] V[a,b,c]`` (α² GEMMs over
    channels); ``Y = A^T M A`` per output tile, cropped to (OH, OW)."""
    bt, _, at = (_cast(mat, x.dtype) for mat in matrices(m))
    alpha = m + 2
    out_hw = (x.shape[2] + 2 * padding[0] - 2, x.shape[3] + 2 * padding[1] - 2)
    v = bt @ _input_tiles(x, padding, m, out_hw) @ bt.T  # (N, C, TH, TW, α, α)
    u = transform_filters(weight, m).reshape(alpha, alpha, *weight.shape[:2])
    mm = np.einsum("abfc,nctuab->nftuab", u, v, optimize=True)  # Σ_c: α² matrix products over channels
    y = at @ mm @ at.T  # (N, F, TH, TW, m, m)
    n, f, th, tw = y.shape[:4]
    y = y.transpose(0, 1, 2, 4, 3, 5).reshape(n, f, th * m, tw * m)[:, :, :out_hw[0], :out_hw[1]]
    if bias is not None:
        y = y + bias[None, :, None, None]
    return np.ascontiguousarray(y)


def flipped_filters(weight):
    """``w'[c, f, p, q] = w[f, c, 2-p, 2-q]``: the filters of the input gradient."""
    return np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


def input_gradient_padding(padding):
    """Padding of the convolution that gives ``∂L/∂x`` from ``∂L/∂y``: ``2 - P`` (negative: crop)."""
    return (2 - padding[0], 2 - padding[1])


def conv2d_backward(x, weight, grad_y, padding, need_input_grad=True, need_weight_grad=True, m=4):
    """Gradients of :func:`conv2d_forward` (see the module docstring): ``(grad_x, grad_weight)``, each
    ``None`` when not asked for.

    ``∂L/∂x = winograd(∂L/∂y, w', padding 2 - P)``; ``∂L/∂U[a,b] = Σ_{n,t,u} (A ∂L/∂Y A^T)[a,b] ⊙ V[a,b]``
    (α² GEMMs over tiles), ``∂L/∂w = G^T ∂L/∂U G``."""
    grad_x = grad_weight = None
    if need_input_grad:
        grad_x = conv2d_forward(grad_y, flipped_filters(weight), None, input_gradient_padding(padding), m)
    if need_weight_grad:
        bt, _, at = (_cast(mat, x.dtype) for mat in matrices(m))
        out_hw = grad_y.shape[2:]
        v = bt @ _input_tiles(x, padding, m, out_hw) @ bt.T  # (N, C, TH, TW, α, α)
        # ∂L/∂y cut into the same m×m tiles (zeros past the output), then ∂L/∂M = A ∂L/∂Y A^T
        th, tw = tile_grid(*out_hw, m)
        g = np.zeros(grad_y.shape[:2] + (th * m, tw * m), dtype=grad_y.dtype)
        g[:, :, :out_hw[0], :out_hw[1]] = grad_y
        g = g.reshape(*grad_y.shape[:2], th, m, tw, m).transpose(0, 1, 2, 4, 3, 5)
        grad_m = at.T @ g @ at  # (N, F, TH, TW, α, α)
        grad_u = np.einsum("nftuab,nctuab->abfc", grad_m, v, optimize=True)
        grad_weight = filter_gradient(grad_u.reshape(-1, *weight.shape[:2]), m)
    return grad_x, grad_weight
