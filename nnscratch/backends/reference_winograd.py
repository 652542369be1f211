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
past the output (the input is zero-padded far enough) and are cropped.

The gradients take the forward's steps backwards, each one's transpose (the adjoint):
``∂L/∂M = A ∂L/∂Y A^T`` per output tile, then

* ``∂L/∂w``: ``∂L/∂U[f,c] = Σ_{n,tiles} ∂L/∂M_f ⊙ (B^T d_c B)`` and ``∂L/∂g = G^T (∂L/∂U) G``;
* ``∂L/∂x``: ``∂L/∂V_c = Σ_f U_{f,c} ⊙ ∂L/∂M_f``, ``∂L/∂d_c = B ∂L/∂V_c B^T``, each tile's share added
  back onto the input pixels it was cut from (tiles overlap by 2 pixels).

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


def kronecker(m):
    """``G ⊗ G`` of F(m×m, 3×3), (α², 9) float64: row ``ab = a α + b``, column ``pq = 3 p + q`` holds
    ``G[a, p] G[b, q]``, so that ``G w G^T``, read row by row, is ``(G ⊗ G) · w`` with ``w`` read as 9 values."""
    _, g, _ = matrices(m)
    return np.kron(g, g)


def transform_filters(weight, m):
    """``U[ab, f, c] = (G w[f, c] G^T)[a, b]``, ``ab = a α + b``, computed in float64 as the product
    ``U = (G ⊗ G) · w`` with ``w`` read as a (9, F·C) matrix (:func:`kronecker`), its nine columns'
    products added in order, ``U = Σ_pq (G ⊗ G)[:, pq] w[pq]``; returned in ``weight``'s dtype,
    C-contiguous (α², F, C), the layout of the compiled kernels' GEMMs. (The order is written out so
    that the compiled twin can add the same products in the same order: the same bits.)"""
    f, c = weight.shape[:2]
    kron, w = kronecker(m), weight.reshape(f * c, 9).T.astype(np.float64)
    u = np.zeros((kron.shape[0], f * c))
    for pq in range(9):
        u += kron[:, pq, None] * w[pq]
    return u.reshape(-1, f, c).astype(weight.dtype)


def filter_gradient(grad_u, m):
    """``∂L/∂w[f, c] = G^T ∂L/∂U[:, f, c] G`` (the adjoint of :func:`transform_filters`: the transposed
    product ``(G ⊗ G)^T · ∂L/∂U``, its α² rows' products added in order), from ``grad_u`` (α², F, C),
    computed in float64, returned in ``grad_u``'s dtype (F, C, 3, 3)."""
    alpha2, f, c = grad_u.shape
    kron, g = kronecker(m), grad_u.reshape(alpha2, f * c).astype(np.float64)
    grad_w = np.zeros((9, f * c))
    for ab in range(alpha2):
        grad_w += kron[ab, :, None] * g[ab]
    return grad_w.T.reshape(f, c, 3, 3).astype(grad_u.dtype)


def _placement(x_shape, padding, rows, cols):
    """Where ``x`` sits in the zero-padded ``rows × cols`` plane of the tiles: ``x[r0:r1, c0:c1]`` goes to
    ``[r0 + ph : r1 + ph, c0 + pw : c1 + pw]`` (a negative padding crops ``x``)."""
    (h, w), (ph, pw) = x_shape[2:], padding
    r0, r1, c0, c1 = max(0, -ph), min(h, rows - ph), max(0, -pw), min(w, cols - pw)
    return (slice(None), slice(None), slice(r0, max(r0, r1)), slice(c0, max(c0, c1))), \
        (slice(None), slice(None), slice(r0 + ph, max(r0, r1) + ph), slice(c0 + pw, max(c0, c1) + pw))


def _input_tiles(x, padding, m, out_hw):
    """``d[n, c, t, u] = x_pad[n, c, t m : t m + α, u m : u m + α]`` (N, C, TH, TW, α, α): ``x`` placed
    at offset ``padding`` (negative: cropped) in a zero array just large enough for every tile."""
    th, tw = tile_grid(*out_hw, m)
    x_pad = np.zeros(x.shape[:2] + (th * m + 2, tw * m + 2), dtype=x.dtype)
    inside, placed = _placement(x.shape, padding, th * m + 2, tw * m + 2)
    x_pad[placed] = x[inside]
    return sliding_window_view(x_pad, (m + 2, m + 2), axis=(2, 3))[:, :, ::m, ::m]


def _input_tiles_adjoint(grad_d, x_shape, padding, m):
    """The adjoint of :func:`_input_tiles`: every tile's ``∂L/∂d`` added back onto the pixels it was cut
    from (overlapping tiles add up), the padding cut away: ``∂L/∂x`` of shape ``x_shape``."""
    th, tw, alpha = grad_d.shape[2], grad_d.shape[3], m + 2
    grad_pad = np.zeros(tuple(x_shape[:2]) + (th * m + 2, tw * m + 2), dtype=grad_d.dtype)
    for a in range(alpha):
        for b in range(alpha):
            grad_pad[:, :, a:a + th * m:m, b:b + tw * m:m] += grad_d[..., a, b]
    grad_x = np.zeros(x_shape, dtype=grad_d.dtype)
    inside, placed = _placement(x_shape, padding, th * m + 2, tw * m + 2)
    grad_x[inside] = grad_pad[placed]
    return grad_x


def _cast(matrix, dtype):
    return matrix.astype(dtype)  # the integer matrices B^T, A^T are exact in float32


def conv2d_forward(x, weight, bias, padding, m=4):
    """F(m×m, 3×3) Winograd convolution, stride 1: the same ``y`` as
    :func:`nnscratch.backends.reference.conv2d_forward` up to rounding.

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


def conv2d_backward(x, weight, grad_y, padding, need_input_grad=True, need_weight_grad=True, m=4):
    """Gradients of :func:`conv2d_forward`, its steps taken backwards (each one's transpose): ``(grad_x,
    grad_weight)``, each ``None`` when not asked for.

    ``∂L/∂M = A ∂L/∂Y A^T`` per output tile (``∂L/∂y`` cut into the forward's tiles, zeros past the output);
    ``∂L/∂U[a,b] = Σ_{n,t,u} ∂L/∂M[a,b] V[a,b]^T`` (α² GEMMs over tiles), ``∂L/∂w = G^T ∂L/∂U G``;
    ``∂L/∂V[a,b] = U[a,b]^T ∂L/∂M[a,b]`` (α² GEMMs over filters), ``∂L/∂d = B ∂L/∂V B^T`` per input tile,
    added back onto the input pixels each tile was cut from."""
    bt, _, at = (_cast(mat, x.dtype) for mat in matrices(m))
    alpha, out_hw = m + 2, grad_y.shape[2:]
    th, tw = tile_grid(*out_hw, m)
    g = np.zeros(grad_y.shape[:2] + (th * m, tw * m), dtype=grad_y.dtype)
    g[:, :, :out_hw[0], :out_hw[1]] = grad_y
    g = g.reshape(*grad_y.shape[:2], th, m, tw, m).transpose(0, 1, 2, 4, 3, 5)  # (N, F, TH, TW, m, m)
    grad_m = at.T @ g @ at  # (N, F, TH, TW, α, α)
    grad_x = grad_weight = None
    if need_input_grad:
        u = transform_filters(weight, m).reshape(alpha, alpha, *weight.shape[:2])
        grad_v = np.einsum("abfc,nftuab->nctuab", u, grad_m, optimize=True)
        grad_x = _input_tiles_adjoint(bt.T @ grad_v @ bt, x.shape, padding, m)
    if need_weight_grad:
        v = bt @ _input_tiles(x, padding, m, out_hw) @ bt.T  # (N, C, TH, TW, α, α)
        grad_u = np.einsum("nftuab,nctuab->abfc", grad_m, v, optimize=True)
        grad_weight = filter_gradient(grad_u.reshape(-1, *weight.shape[:2]), m)
    return grad_x, grad_weight
