# Part of nnscratch/_kernels.pyx (textually included there, one extension module): Winograd convolution.
# The shared pieces (_threads_for, _gemm, _check_blas_sizes, the imports) are defined there.
#
# Compiled twin of nnscratch/backends/reference_winograd.py: F(m×m, 3×3), m = 2 or 4, α = m + 2, stride 1.
# The output tiles of the whole batch are numbered g = (n·TH + t)·TW + u; each image's TH·TW tiles
# are cut into blocks of at most ``block`` consecutive tiles, a size fixed by the shapes of one image
# alone (``winograd_block``), so a block never spans two images and an image is computed the same way
# whatever the batch around it: its output does not depend on the batch size or its place in the batch.
# One thread takes a block at a time and keeps it in cache through three steps:
#   1. input transform  V[ab, c, k] = (B^T d B)[a, b] of tile k of the block and channel c;
#   2. α² GEMMs         M[ab] (F × block) = U[ab] (F × C) · V[ab] (C × block)   (``_gemm``);
#   3. output transform y tile = A^T M A, cropped to the output, plus the bias.
# The filter transform U = G w G^T (α², F, C) and its adjoint, and the 1-D tile transforms, are in
# _kernels_winograd_transforms.pxi.
# The backward cuts the batch into parts of whole images (WINOGRAD_BACKWARD_PARTS), one thread each.
# Its blocks hold as many whole images of the part as the same budget allows (or, for large images,
# part of one), and per block it computes ∂L/∂M = A ∂L/∂Y A^T once for both gradients; then
#   ∂L/∂U[ab] (F × C) += ∂L/∂M[ab] (F × block) · V[ab]ᵀ into the part's partial sum (one product whose
#   sum runs over all the block's tiles; the caller sums the parts in a fixed order), and
#   ∂L/∂V[ab] (C × tiles) = U[ab]ᵀ · ∂L/∂M[ab] image by image (so an image's ∂L/∂x is the same bits
#   in any batch), whose adjoint input transform B ∂L/∂V B^T is added onto the part's own images of ∂L/∂x.

from nnscratch.backends.reference_winograd import tile_grid


cdef enum:
    WINOGRAD_MAX_BLOCK = 512  # tiles per block at most (``winograd_block``)


cdef void _tile_origins(Py_ssize_t g0, Py_ssize_t nb, int m, Py_ssize_t TH, Py_ssize_t TW,
                        Py_ssize_t* image, Py_ssize_t* row, Py_ssize_t* col) noexcept nogil:
    """Tile ``g0 + k`` covers the output pixels ``[row[k], row[k] + m) × [col[k], col[k] + m)`` of image ``image[k]``."""
    cdef Py_ssize_t k, g
    for k in range(nb):
        g = g0 + k
        image[k] = g // (TH * TW)
        row[k] = ((g // TW) % TH) * m
        col[k] = (g % TW) * m


cdef inline void _read_tile(const floating* src, Py_ssize_t W, floating* d, Py_ssize_t nb, int size) noexcept nogil:
    """``d[(a·size + b)·nb] = src[a·W + b]`` for ``a, b < size``: a tile lying wholly inside its plane. Called
    with a constant ``size`` where it can be, so that the compiler unrolls the copy."""
    cdef int a, b
    for a in range(size):
        for b in range(size):
            d[(a * size + b) * nb] = src[a * W + b]


cdef inline void _add_tile(const floating* d, Py_ssize_t nb, floating* dst, Py_ssize_t W, int size) noexcept nogil:
    """``dst[a·W + b] += d[(a·size + b)·nb]`` for ``a, b < size``: the adjoint of :func:`_read_tile`."""
    cdef int a, b
    for a in range(size):
        for b in range(size):
            dst[a * W + b] += d[(a * size + b) * nb]


cdef void _gather_tiles(const floating* planes, Py_ssize_t plane_stride, Py_ssize_t H, Py_ssize_t W,
                        const Py_ssize_t* image, const Py_ssize_t* row, const Py_ssize_t* col,
                        Py_ssize_t shift_r, Py_ssize_t shift_c, int size, Py_ssize_t nb, floating* d) noexcept nogil:
    """``d[a, b, k] = plane[row[k] + shift_r + a, col[k] + shift_c + b]`` (``size × size`` per tile k) of the
    ``H × W`` plane ``planes + image[k]·plane_stride``, 0 outside it."""
    cdef Py_ssize_t k, r0, c0, r, c
    cdef int a, b
    cdef const floating* plane
    for k in range(nb):
        plane = planes + image[k] * plane_stride
        r0 = row[k] + shift_r
        c0 = col[k] + shift_c
        if r0 >= 0 and c0 >= 0 and r0 + size <= H and c0 + size <= W:
            if size == 6:
                _read_tile(plane + r0 * W + c0, W, d + k, nb, 6)
            elif size == 4:
                _read_tile(plane + r0 * W + c0, W, d + k, nb, 4)
            else:
                _read_tile(plane + r0 * W + c0, W, d + k, nb, size)
            continue
        for a in range(size):
            r = r0 + a
            for b in range(size):
                c = c0 + b
                d[(a * size + b) * nb + k] = plane[r * W + c] if 0 <= r < H and 0 <= c < W else 0


cdef void _input_transform(const floating* x, floating* v, floating* work, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                           int m, Py_ssize_t ph, Py_ssize_t pw, const Py_ssize_t* image, const Py_ssize_t* row,
                           const Py_ssize_t* col, Py_ssize_t nb) noexcept nogil:
    """``v[ab, c, k] = (B^T d B)[ab]``, ``d`` tile k of channel c: ``x[image[k], c, row[k] - ph + a, col[k] - pw + b]``.
    Every step runs over the block's tiles k in its innermost loop (contiguous: the compiler vectorizes it)."""
    cdef int alpha = m + 2, a, b
    cdef Py_ssize_t k, c, cn = C * nb
    cdef floating* d = work
    cdef floating* tmp = work + alpha * alpha * nb
    for c in range(C):
        _gather_tiles(x + c * H * W, C * H * W, H, W, image, row, col, -ph, -pw, alpha, nb, d)
        for b in range(alpha):  # columns: tmp = B^T d
            _bt_1d(d + b * nb, alpha * nb, tmp + b * nb, alpha * nb, nb, m)
        for a in range(alpha):  # rows: v = tmp B
            _bt_1d(tmp + a * alpha * nb, nb, v + a * alpha * cn + c * nb, cn, nb, m)


cdef void _scatter_add_tiles(const floating* d, floating* planes, Py_ssize_t plane_stride, Py_ssize_t H, Py_ssize_t W,
                             const Py_ssize_t* image, const Py_ssize_t* row, const Py_ssize_t* col,
                             Py_ssize_t shift_r, Py_ssize_t shift_c, int size, Py_ssize_t nb) noexcept nogil:
    """The adjoint of ``_gather_tiles``: ``plane[row[k] + shift_r + a, col[k] + shift_c + b] += d[a, b, k]``
    inside the ``H × W`` plane ``planes + image[k]·plane_stride``, tile after tile."""
    cdef Py_ssize_t k, r0, c0, r, c
    cdef int a, b
    cdef floating* plane
    for k in range(nb):
        plane = planes + image[k] * plane_stride
        r0 = row[k] + shift_r
        c0 = col[k] + shift_c
        if r0 >= 0 and c0 >= 0 and r0 + size <= H and c0 + size <= W:
            if size == 6:
                _add_tile(d + k, nb, plane + r0 * W + c0, W, 6)
            elif size == 4:
                _add_tile(d + k, nb, plane + r0 * W + c0, W, 4)
            else:
                _add_tile(d + k, nb, plane + r0 * W + c0, W, size)
            continue
        for a in range(size):
            r = r0 + a
            if 0 <= r < H:
                for b in range(size):
                    c = c0 + b
                    if 0 <= c < W:
                        plane[r * W + c] += d[(a * size + b) * nb + k]


cdef void _input_transform_adjoint(const floating* gv, floating* grad_x, floating* work, Py_ssize_t C, Py_ssize_t H,
                                   Py_ssize_t W, int m, Py_ssize_t ph, Py_ssize_t pw, const Py_ssize_t* image,
                                   const Py_ssize_t* row, const Py_ssize_t* col, Py_ssize_t nb) noexcept nogil:
    """The adjoint of ``_input_transform``: ``∂L/∂d = B gv[:, c, k] B^T`` added onto the pixels of
    ``grad_x[image[k], c]`` tile k was cut from."""
    cdef int alpha = m + 2, a, b
    cdef Py_ssize_t c, cn = C * nb
    cdef floating* d = work
    cdef floating* tmp = work + alpha * alpha * nb
    for c in range(C):
        for b in range(alpha):  # columns: tmp = B ∂L/∂V
            _b_1d(gv + b * cn + c * nb, alpha * cn, tmp + b * nb, alpha * nb, nb, m)
        for a in range(alpha):  # rows: d = tmp B^T
            _b_1d(tmp + a * alpha * nb, nb, d + a * alpha * nb, nb, nb, m)
        _scatter_add_tiles(d, grad_x + c * H * W, C * H * W, H, W, image, row, col, -ph, -pw, alpha, nb)


cdef void _output_transform(const floating* mm, floating* y, const floating* bias, bint has_bias, floating* work,
                            Py_ssize_t F, Py_ssize_t OH, Py_ssize_t OW, int m, const Py_ssize_t* image,
                            const Py_ssize_t* row, const Py_ssize_t* col, Py_ssize_t nb) noexcept nogil:
    """``y[image[k], f, row[k] + i, col[k] + j] = (A^T M A)[i, j] (+ bias[f])`` inside the output, ``M[ab] = mm[ab, f, k]``."""
    cdef int alpha = m + 2, a, i, j, rows, cols
    cdef Py_ssize_t k, f, fn = F * nb
    cdef floating* tmp = work
    cdef floating* out = work + alpha * alpha * nb
    cdef floating b
    cdef floating* plane
    for f in range(F):
        for a in range(alpha):  # columns: tmp (m × α) = A^T M
            _at_1d(mm + a * fn + f * nb, alpha * fn, tmp + a * nb, alpha * nb, nb, m)
        for i in range(m):  # rows: out (m × m) = tmp A
            _at_1d(tmp + i * alpha * nb, nb, out + i * m * nb, nb, nb, m)
        b = bias[f] if has_bias else 0  # (adding a zero bias changes no value: -0 becomes +0 at most)
        for k in range(nb):
            plane = y + (image[k] * F + f) * OH * OW + row[k] * OW + col[k]
            rows = <int> min(m, OH - row[k])
            cols = <int> min(m, OW - col[k])
            if m == 4 and rows == 4 and cols == 4:  # constant trip counts: the copy is unrolled
                for i in range(4):
                    for j in range(4):
                        plane[i * OW + j] = out[(i * 4 + j) * nb + k] + b
            else:
                for i in range(rows):
                    for j in range(cols):
                        plane[i * OW + j] = out[(i * m + j) * nb + k] + b


cdef void _grad_output_transform(const floating* grad_y, floating* gm, floating* work, Py_ssize_t F, Py_ssize_t OH,
                                 Py_ssize_t OW, int m, const Py_ssize_t* image, const Py_ssize_t* row,
                                 const Py_ssize_t* col, Py_ssize_t nb) noexcept nogil:
    """``gm[ab, f, k] = (A ∂L/∂Y A^T)[ab]``, ``∂L/∂Y`` tile k of ``grad_y[:, f]`` (the adjoint of ``_output_transform``)."""
    cdef int alpha = m + 2, a, j
    cdef Py_ssize_t k, f, fn = F * nb
    cdef floating* d = work
    cdef floating* tmp = work + alpha * alpha * nb
    for f in range(F):
        _gather_tiles(grad_y + f * OH * OW, F * OH * OW, OH, OW, image, row, col, 0, 0, m, nb, d)
        for j in range(m):  # columns: tmp (α × m) = A dY
            _a_1d(d + j * nb, m * nb, tmp + j * nb, m * nb, nb, m)
        for a in range(alpha):  # rows: gm (α × α) = tmp A^T
            _a_1d(tmp + a * m * nb, nb, gm + a * alpha * fn + f * nb, fn, nb, m)


cdef void _winograd_block_forward(const floating* x, const floating* u, const floating* bias, bint has_bias,
                                  floating* y, floating* v, floating* mm, floating* work, Py_ssize_t C, Py_ssize_t H,
                                  Py_ssize_t W, Py_ssize_t F, Py_ssize_t OH, Py_ssize_t OW, int m, Py_ssize_t ph,
                                  Py_ssize_t pw, Py_ssize_t TH, Py_ssize_t TW, Py_ssize_t g0, Py_ssize_t nb) noexcept nogil:
    """Steps 1-3 of the header for tiles ``g0 .. g0 + nb - 1``, in the thread's buffers ``v``, ``mm``, ``work``."""
    cdef int ab
    cdef Py_ssize_t image[WINOGRAD_MAX_BLOCK]
    cdef Py_ssize_t row[WINOGRAD_MAX_BLOCK]
    cdef Py_ssize_t col[WINOGRAD_MAX_BLOCK]
    _tile_origins(g0, nb, m, TH, TW, image, row, col)
    _input_transform(x, v, work, C, H, W, m, ph, pw, image, row, col, nb)
    for ab in range((m + 2) * (m + 2)):
        _gemm(False, False, F, nb, C, 1, u + ab * F * C, C, v + ab * C * nb, nb, 0, mm + ab * F * nb, nb)
    _output_transform(mm, y, bias, has_bias, work, F, OH, OW, m, image, row, col, nb)


cdef void _winograd_block_backward(const floating* x, const floating* u, const floating* grad_y, floating* grad_x,
                                   floating* grad_u, floating* v, floating* gm, floating* work, Py_ssize_t C,
                                   Py_ssize_t H, Py_ssize_t W, Py_ssize_t F, Py_ssize_t OH, Py_ssize_t OW, int m,
                                   Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t TH, Py_ssize_t TW, Py_ssize_t g0,
                                   Py_ssize_t nb, Py_ssize_t image_tiles, bint need_input_grad,
                                   bint need_weight_grad) noexcept nogil:
    """Tiles ``g0 .. g0 + nb - 1`` (whole images of ``image_tiles`` tiles, or part of one):
    ``∂L/∂M = A ∂L/∂Y A^T``; ``grad_u[ab] += ∂L/∂M[ab] · V[ab]ᵀ`` (one product over all the block's
    tiles); ``∂L/∂V[ab] = U[ab]ᵀ · ∂L/∂M[ab]`` (in ``v``), then its adjoint input transform into ``grad_x``."""
    cdef int ab, alpha2 = (m + 2) * (m + 2)
    cdef Py_ssize_t s, width
    cdef Py_ssize_t image[WINOGRAD_MAX_BLOCK]
    cdef Py_ssize_t row[WINOGRAD_MAX_BLOCK]
    cdef Py_ssize_t col[WINOGRAD_MAX_BLOCK]
    _tile_origins(g0, nb, m, TH, TW, image, row, col)
    _grad_output_transform(grad_y, gm, work, F, OH, OW, m, image, row, col, nb)
    if need_weight_grad:
        _input_transform(x, v, work, C, H, W, m, ph, pw, image, row, col, nb)
        for ab in range(alpha2):
            _gemm(False, True, F, C, nb, 1, gm + ab * F * nb, nb, v + ab * C * nb, nb, 1, grad_u + ab * F * C, C)
    if need_input_grad:  # one product per image (columns s .. s + width): an image's ∂L/∂x never depends on the others
        for ab in range(alpha2):
            s = 0
            while s < nb:
                width = min(image_tiles, nb - s)
                _gemm(True, False, C, width, F, 1, u + ab * F * C, C, gm + ab * F * nb + s, nb, 0, v + ab * C * nb + s, nb)
                s = s + width
        _input_transform_adjoint(v, grad_x, work, C, H, W, m, ph, pw, image, row, col, nb)


def _winograd_forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] u, const floating[::1] bias,
                      bint has_bias, floating[:, :, :, ::1] y, floating[:, ::1] v, floating[:, ::1] mm,
                      floating[:, ::1] work, int m, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t block):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], F = u.shape[1]
    cdef Py_ssize_t OH = y.shape[2], OW = y.shape[3], TH = (OH + m - 1) // m, TW = (OW + m - 1) // m
    cdef Py_ssize_t tiles = TH * TW, chunks = (tiles + block - 1) // block, i, g0, first
    cdef int nt = v.shape[0], t
    with nogil, parallel(num_threads=nt):
        t = threadid()
        for i in prange(N * chunks, schedule="static"):  # block i: image i // chunks, its chunk i % chunks
            first = (i % chunks) * block
            g0 = (i // chunks) * tiles + first
            _winograd_block_forward(&x[0, 0, 0, 0], &u[0, 0, 0], &bias[0], has_bias, &y[0, 0, 0, 0], &v[t, 0],
                                    &mm[t, 0], &work[t, 0], C, H, W, F, OH, OW, m, ph, pw, TH, TW, g0,
                                    min(block, tiles - first))


def _winograd_backward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] u, const floating[:, :, :, ::1] grad_y,
                       floating[:, :, :, ::1] grad_x, floating[:, :, :, ::1] parts, floating[:, ::1] v, floating[:, ::1] gm,
                       floating[:, ::1] work, int m, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t block,
                       bint need_input_grad, bint need_weight_grad):
    """Part p (images ``N p // P`` to ``N (p + 1) // P``, one thread) runs its blocks in order, adding into
    ``parts[p]`` and into its own images of ``grad_x`` (zeroed by the caller)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], F = grad_y.shape[1]
    cdef Py_ssize_t OH = grad_y.shape[2], OW = grad_y.shape[3], TH = (OH + m - 1) // m, TW = (OW + m - 1) // m
    cdef Py_ssize_t P = parts.shape[0], tiles = TH * TW, chunks = (tiles + block - 1) // block
    cdef Py_ssize_t images = max(1, block // tiles), p, n0, last, chunk, nb
    cdef int nt = v.shape[0], t
    with nogil, parallel(num_threads=nt):
        t = threadid()
        for p in prange(P, schedule="static"):
            last = N * (p + 1) // P
            n0 = N * p // P
            while n0 < last:  # the part's images, ``images`` at a time, or one in ``chunks`` blocks
                for chunk in range(chunks):
                    nb = min(images, last - n0) * tiles if block >= tiles else min(block, tiles - chunk * block)
                    _winograd_block_backward(&x[0, 0, 0, 0], &u[0, 0, 0], &grad_y[0, 0, 0, 0], &grad_x[0, 0, 0, 0],
                                             &parts[p, 0, 0, 0], &v[t, 0], &gm[t, 0], &work[t, 0], C, H, W, F, OH,
                                             OW, m, ph, pw, TH, TW, n0 * tiles + chunk * block, nb, tiles,
                                             need_input_grad, need_weight_grad)
                n0 = n0 + images


# The backward cuts the batch into this many parts of whole images at most, one thread each: tiles of
# different images share no input pixel, so the parts add into ∂L/∂x without locks, and each sums its
# own ∂L/∂U (α²/9 = 4× as many numbers as the weights, hence fewer parts than WEIGHT_GRAD_BLOCKS).
WINOGRAD_BACKWARD_PARTS = 4
WINOGRAD_BLOCK_ELEMENTS = 1 << 19  # transformed input + products of a block of tiles: 2 MiB in float32, a core's L2 here


def winograd_block(m, c, f):
    """Tiles per block: as many as keep the block's ``V`` (α², C, block) and ``M`` (α², F, block) within
    ``WINOGRAD_BLOCK_ELEMENTS``, between 16 and 512 (fixed by the shapes, never by the thread count)."""
    return int(max(16, min(WINOGRAD_MAX_BLOCK, WINOGRAD_BLOCK_ELEMENTS // ((m + 2) ** 2 * (c + f)))))


def _winograd_plan(n, c, f, oh, ow, m, dtype, parts=0):
    """``(block, threads, buffers)``: tiles per block, the threads for the blocks (forward) or for
    ``parts`` parts (backward), and each thread's buffers ``V`` (α² C block), ``M`` (α² F block) and the
    transforms' scratch (2 α² block). The forward's blocks hold one image's tiles at most. The
    backward's hold as many whole images as fit, for the weight gradient's products, whose sum runs
    over the tiles (one image's few tiles make a short, slow sum); its ∂L/∂x products still run image
    by image. So an image's output and input gradient never depend on the rest of the batch."""
    rows, cols = tile_grid(oh, ow, m)
    tiles, alpha2 = rows * cols, (m + 2) ** 2
    block = winograd_block(m, c, f)
    if block >= tiles:  # whole images: one in the forward, as many as fit in the backward
        block = tiles * (block // tiles if parts else 1)
    _check_blas_sizes(f, c, block)
    nt = _threads_for(parts or n * -(-tiles // block), <double> n * tiles * alpha2 * c * f)
    return block, nt, [np.empty((nt, size * block), dtype) for size in (alpha2 * c, alpha2 * f, 2 * alpha2)]


def winograd_conv2d_forward(x, weight, bias, padding, m=4):
    """Compiled :func:`nnscratch.backends.reference_winograd.conv2d_forward`, F(m×m, 3×3), stride 1."""
    n, c, h, w = x.shape
    f = weight.shape[0]
    y = np.empty((n, f, h + 2 * padding[0] - 2, w + 2 * padding[1] - 2), dtype=x.dtype)
    if y.size == 0:
        return y
    block, _, (v, mm, work) = _winograd_plan(n, c, f, y.shape[2], y.shape[3], m, x.dtype)
    has_bias = bias is not None
    _winograd_forward(x, transform_filters(weight, m), bias if has_bias else np.zeros(f, x.dtype), has_bias, y,
                      v, mm, work, m, padding[0], padding[1], block)
    return y


def winograd_conv2d_backward(x, weight, grad_y, padding, need_input_grad=True, need_weight_grad=True, m=4):
    """Compiled :func:`nnscratch.backends.reference_winograd.conv2d_backward`: both gradients in one pass over the
    tiles, which transforms each block's ``∂L/∂y`` once for the two."""
    n, c = x.shape[:2]
    f, oh, ow = grad_y.shape[1:]
    parts_count = max(1, min(n, WINOGRAD_BACKWARD_PARTS))
    grad_x = np.zeros_like(x) if need_input_grad else None
    parts = np.zeros((parts_count, (m + 2) ** 2, f, c), dtype=x.dtype) if need_weight_grad else None
    if (need_input_grad or need_weight_grad) and x.size and grad_y.size:
        block, _, (v, gm, work) = _winograd_plan(n, c, f, oh, ow, m, x.dtype, parts_count)
        _winograd_backward(x, transform_filters(weight, m), grad_y,
                           grad_x if need_input_grad else np.empty((1, 1, 1, 1), x.dtype),
                           parts if need_weight_grad else np.empty((parts_count, 1, 1, 1), x.dtype),
                           v, gm, work, m, padding[0], padding[1], block, need_input_grad, need_weight_grad)
    return grad_x, filter_gradient(add_blocks(parts), m) if need_weight_grad else None  # parts added in order
