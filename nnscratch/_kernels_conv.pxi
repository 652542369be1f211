# Part of nnscratch/_kernels.pyx (textually included there, one extension module): the convolution kernels.
# The shared pieces (_threads_for, _gemm, _check_blas_sizes, the imports) are defined there.

# ----------------------------------------------------------------------------- convolution
#
# The per-image and per-plane work is written as plain C functions over raw pointers
# (C-contiguous arrays, so ``x[c, h, w]`` is ``x[(c*H + h)*W + w]``); the ``prange``
# loops that call them only hand out images or planes to threads.

cdef inline void _valid_columns(Py_ssize_t ow, Py_ssize_t W, int sw, Py_ssize_t offset,
                                Py_ssize_t* j_lo, Py_ssize_t* j_hi) noexcept nogil:
    """Output columns j whose input column ``j*sw + offset`` lies inside ``[0, W)``: ``[j_lo, j_hi)``."""
    cdef Py_ssize_t lo = 0, hi = ow
    if offset < 0:
        lo = (-offset + sw - 1) // sw
    if (ow - 1) * sw + offset >= W:
        hi = (W - 1 - offset) // sw + 1 if W - 1 - offset >= 0 else 0
    j_lo[0] = min(lo, ow)
    j_hi[0] = max(hi, j_lo[0])


cdef void _im2col_rows(const floating* x, floating* cols, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                       int kh, int kw, int sh, int sw, int ph, int pw,
                       Py_ssize_t i_lo, Py_ssize_t i_hi, Py_ssize_t ow) noexcept nogil:
    """``cols[(c*KH + p)*KW + q, (i - i_lo)*OW + j] = x_pad[c, i*sh + p, j*sw + q]`` for the output rows
    ``i_lo <= i < i_hi`` of one image ``x`` (C, H, W); all rows (``0, OH``) give the image's im2col."""
    cdef Py_ssize_t c, p, q, i, j, row, j_lo, j_hi, P = (i_hi - i_lo) * ow
    cdef floating* out
    cdef const floating* src
    for c in range(C):
        for p in range(kh):
            for q in range(kw):
                _valid_columns(ow, W, sw, q - pw, &j_lo, &j_hi)
                for i in range(i_lo, i_hi):
                    out = cols + ((c * kh + p) * kw + q) * P + (i - i_lo) * ow
                    row = i * sh + p - ph
                    if row < 0 or row >= H:
                        for j in range(ow):
                            out[j] = 0
                        continue
                    src = x + (c * H + row) * W + q - pw
                    for j in range(j_lo):
                        out[j] = 0
                    if sw == 1:  # a contiguous run: the compiler vectorizes this copy
                        for j in range(j_lo, j_hi):
                            out[j] = src[j]
                    else:
                        for j in range(j_lo, j_hi):
                            out[j] = src[j * sw]
                    for j in range(j_hi, ow):
                        out[j] = 0


cdef void _col2im_image(const floating* cols, floating* grad_x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                        int kh, int kw, int sh, int sw, int ph, int pw,
                        Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """The adjoint of ``_im2col_rows`` over all rows: ``grad_x[c, i*sh+p-ph, j*sw+q-pw] += cols[k, i*OW + j]``
    (``grad_x`` is overwritten)."""
    cdef Py_ssize_t c, p, q, i, j, row, j_lo, j_hi, P = oh * ow
    cdef const floating* src
    cdef floating* dst
    for i in range(C * H * W):
        grad_x[i] = 0
    for c in range(C):
        for p in range(kh):
            for q in range(kw):
                src = cols + ((c * kh + p) * kw + q) * P
                _valid_columns(ow, W, sw, q - pw, &j_lo, &j_hi)
                for i in range(oh):
                    row = i * sh + p - ph
                    if row < 0 or row >= H:
                        continue
                    dst = grad_x + (c * H + row) * W + q - pw
                    if sw == 1:
                        for j in range(j_lo, j_hi):
                            dst[j] += src[i * ow + j]
                    else:
                        for j in range(j_lo, j_hi):
                            dst[j * sw] += src[i * ow + j]


def _conv_forward(const floating[:, :, :, ::1] x, const floating[:, ::1] wmat, const floating[::1] bias,
                  bint has_bias, floating[:, :, ::1] y, floating[:, ::1] cols, bint pointwise, Py_ssize_t row_blocks,
                  int kh, int kw, int sh, int sw, int ph, int pw, Py_ssize_t oh, Py_ssize_t ow):
    """Per image n and block b of its output rows ``[i_lo, i_hi)`` (``Pb`` pixels from ``i_lo·OW``):
    ``y[n][:, i_lo·OW : i_lo·OW + Pb] = wmat @ cols (+ bias)`` with ``cols`` (K × Pb) the im2col of those
    rows in thread t's buffer ``cols[t]``, or, for a pointwise convolution (1×1, stride 1, no padding,
    whose im2col is the image itself), the columns of ``x[n]`` (C × HW) read in place.

    The bias is written into the block first and the GEMM adds its product to it (β = 1): one pass
    over the block instead of BLAS's zeroing (β = 0) and then a pass adding the bias. When BLAS sums
    all K products before adding them to C (measured: K up to 384 in OpenBLAS 0.3.30's SkylakeX
    sgemm), the result is the same bits as ``(wmat @ cols) + bias``; for larger K, BLAS adds its
    partial sums to the bias one by one, another order of the same sum."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = wmat.shape[0], K = wmat.shape[1], P = oh * ow, item, n, i_lo, i_hi, pb
    cdef int nt = cols.shape[0], t
    cdef floating beta = 1 if has_bias else 0
    cdef const floating* b
    with nogil, parallel(num_threads=nt):
        t = threadid()
        for item in prange(N * row_blocks, schedule="static"):
            n = item // row_blocks
            i_lo = _block_start(oh, item % row_blocks, row_blocks)
            i_hi = _block_start(oh, item % row_blocks + 1, row_blocks)
            pb = (i_hi - i_lo) * ow
            if has_bias:
                _fill_rows(&y[n, 0, i_lo * ow], &bias[0], F, pb, P)
            if pointwise:
                b = &x[n, 0, 0, 0] + i_lo * ow
            else:
                _im2col_rows(&x[n, 0, 0, 0], &cols[t, 0], C, H, W, kh, kw, sh, sw, ph, pw, i_lo, i_hi, ow)
                b = &cols[t, 0]
            _gemm(False, False, F, pb, K, 1, &wmat[0, 0], K, b, P if pointwise else pb, beta,
                  &y[n, 0, i_lo * ow], P)


cdef void _fill_rows(floating* y, const floating* value, Py_ssize_t rows, Py_ssize_t length,
                     Py_ssize_t stride) noexcept nogil:
    """``y[r, :length] = value[r]`` for ``rows`` rows ``stride`` elements apart."""
    cdef Py_ssize_t r, i
    cdef floating v
    for r in range(rows):
        v = value[r]
        for i in range(length):
            y[r * stride + i] = v


def _conv_backward(const floating[:, :, :, ::1] x, const floating[:, ::1] wmat, const floating[:, :, ::1] grad_y,
                   floating[:, :, :, ::1] grad_x, floating[:, :, ::1] grad_w_blocks, floating[:, ::1] cols,
                   bint need_input_grad, bint need_weight_grad, bint pointwise, Py_ssize_t channel_blocks,
                   int kh, int kw, int sh, int sw, int ph, int pw, Py_ssize_t oh, Py_ssize_t ow):
    """For every image n of batch block b and every block of input channels ``[c_lo, c_hi)``, whose
    rows of im2col are ``[k_lo, k_hi) = [c_lo·KH·KW, c_hi·KH·KW)`` (on thread t):
    ``grad_w_blocks[b][:, k_lo:k_hi] += grad_y[n] @ im2col(x[n, c_lo:c_hi])ᵀ`` and
    ``grad_x[n, c_lo:c_hi] = col2im(wmat[:, k_lo:k_hi]ᵀ @ grad_y[n])``; pointwise (im2col and col2im are
    the identity), ``x[n]`` is read and ``grad_x[n]`` written in place. Every piece writes its own
    columns of ∂L/∂W and its own channels of ∂L/∂x, and each sum keeps its length (P for ∂L/∂W, F
    for ∂L/∂x); the caller sums ``grad_w_blocks`` over b. The blocks depend on the shapes only, not on
    the thread count, so neither does the result."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = wmat.shape[0], K = wmat.shape[1], P = oh * ow, blocks = grad_w_blocks.shape[0]
    cdef Py_ssize_t item, b, n, c_lo, c_hi, k_lo, kb
    cdef floating beta
    cdef int nt = cols.shape[0], t
    with nogil, parallel(num_threads=nt):
        t = threadid()
        for item in prange(blocks * channel_blocks, schedule="static"):
            b = item // channel_blocks
            c_lo = _block_start(C, item % channel_blocks, channel_blocks)
            c_hi = _block_start(C, item % channel_blocks + 1, channel_blocks)
            k_lo = c_lo * kh * kw
            kb = (c_hi - c_lo) * kh * kw
            for n in range((N * b) // blocks, (N * (b + 1)) // blocks):
                # the block's first image sets its columns of grad_w_blocks[b] (β = 0), the others add (β = 1)
                beta = 0 if n == (N * b) // blocks else 1
                if need_weight_grad and pointwise:
                    _gemm(False, True, F, kb, P, 1, &grad_y[n, 0, 0], P, &x[n, c_lo, 0, 0], P,
                          beta, &grad_w_blocks[b, 0, k_lo], K)
                elif need_weight_grad:
                    _im2col_rows(&x[n, c_lo, 0, 0], &cols[t, 0], c_hi - c_lo, H, W, kh, kw, sh, sw, ph, pw, 0, oh, ow)
                    _gemm(False, True, F, kb, P, 1, &grad_y[n, 0, 0], P, &cols[t, 0], P, beta, &grad_w_blocks[b, 0, k_lo], K)
                if need_input_grad and pointwise:
                    _gemm(True, False, kb, P, F, 1, &wmat[0, k_lo], K, &grad_y[n, 0, 0], P, 0, &grad_x[n, c_lo, 0, 0], P)
                elif need_input_grad:
                    _gemm(True, False, kb, P, F, 1, &wmat[0, k_lo], K, &grad_y[n, 0, 0], P, 0, &cols[t, 0], P)
                    _col2im_image(&cols[t, 0], &grad_x[n, c_lo, 0, 0], c_hi - c_lo, H, W, kh, kw, sh, sw, ph, pw, oh, ow)


WEIGHT_GRAD_BLOCKS = 16  # the batch is cut into at most this many blocks of images for ∂L/∂W
SPLIT_MIN_WORK = 1 << 20  # multiply-adds of one image's convolution below which its work is not cut
FORWARD_BLOCK_PIXELS = 256  # an image's forward GEMM is cut into blocks of output rows of about this many pixels
BACKWARD_MIN_PIECES = 2  # a backward over fewer images than this is also cut into blocks of input channels


def _geometry(x, weight, stride, padding):
    """(K, OH, OW, pointwise) of a convolution: ``K = C·KH·KW`` rows per im2col buffer; ``pointwise``: a 1×1
    kernel with stride 1 and no padding, whose im2col is the image itself (``K = C``, ``OH·OW = H·W``)."""
    n, c, h, w = x.shape
    kh, kw = weight.shape[2], weight.shape[3]
    oh, ow = output_size(h, kh, stride[0], padding[0]), output_size(w, kw, stride[1], padding[1])
    _check_blas_sizes(weight.shape[0], c * kh * kw, oh * ow)
    pointwise = (kh, kw) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0)
    return c * kh * kw, oh, ow, pointwise


def forward_row_blocks(f, k, oh, ow):
    """How many blocks of output rows an image's forward GEMM (f×k by k×OH·OW) is cut into: enough to
    share one image among threads and keep each block's im2col in cache, at least ``FORWARD_BLOCK_PIXELS``
    pixels each. Fixed by the layer's shapes, never by the batch or the thread count, so an image's
    output is the same bits in any batch and with any number of threads."""
    if <double> f * k * oh * ow < SPLIT_MIN_WORK:
        return 1
    return max(1, min(oh, (oh * ow) // FORWARD_BLOCK_PIXELS))


def backward_channel_blocks(n, f, c, k, p):
    """How many blocks of input channels a backward over ``n`` images (``c`` channels, ``k`` im2col rows,
    ``p`` output pixels, ``f`` filters) is cut into: one when there are at least ``BACKWARD_MIN_PIECES``
    images, else enough for that many pieces, so that one image can use several threads (cutting a
    batch's images too costs more than it saves: each piece's products get smaller). Fixed by the
    shapes and the batch size, never by the thread count; every element of ∂L/∂x is the same sum
    over the filters whatever the blocks."""
    if n >= BACKWARD_MIN_PIECES or <double> f * k * p < SPLIT_MIN_WORK:
        return 1
    return max(1, min(c, (BACKWARD_MIN_PIECES + n - 1) // n))


def conv2d_forward(x, weight, bias, stride, padding):
    """Compiled :func:`nnscratch.backends.reference.conv2d_forward`: per block of an image's output rows,
    im2col then one GEMM (pointwise convolutions: the GEMM alone)."""
    k, oh, ow, pointwise = _geometry(x, weight, stride, padding)
    n, f = x.shape[0], weight.shape[0]
    y = np.empty((n, f, oh * ow), dtype=x.dtype)
    if y.size == 0:
        return y.reshape(n, f, oh, ow)
    blocks = forward_row_blocks(f, k, oh, ow)
    nt = _threads_for(n * blocks, <double> n * f * k * oh * ow)
    cols = np.empty((nt, 1 if pointwise else k * ((oh + blocks - 1) // blocks) * ow), dtype=x.dtype)
    has_bias = bias is not None
    _conv_forward(x, weight.reshape(f, k), bias if has_bias else np.zeros(f, x.dtype), has_bias, y, cols,
                  pointwise, blocks, weight.shape[2], weight.shape[3], stride[0], stride[1], padding[0], padding[1],
                  oh, ow)
    return y.reshape(n, f, oh, ow)


def conv2d_backward(x, weight, grad_y, stride, padding, need_input_grad=True, need_weight_grad=True):
    """Compiled :func:`nnscratch.backends.reference.conv2d_backward`.

    ``∂L/∂W_mat = Σ_n grad_y[n] @ im2col(x[n])ᵀ`` and ``∂L/∂x[n] = col2im(W_matᵀ @ grad_y[n])``:
    col2im sums every window's share back onto the input pixels it came from (pointwise: ``Σ_n grad_y[n] @ x[n]ᵀ``
    and ``W_matᵀ @ grad_y[n]``).
    """
    k, oh, ow, pointwise = _geometry(x, weight, stride, padding)
    n, f, c = x.shape[0], weight.shape[0], x.shape[1]
    blocks = max(1, min(n, WEIGHT_GRAD_BLOCKS))
    channel_blocks = backward_channel_blocks(n, f, c, k, oh * ow)
    grad_x = np.empty_like(x) if need_input_grad else None  # every image's col2im overwrites its slice
    parts = np.empty((blocks, f, k), dtype=x.dtype) if need_weight_grad else None  # each block's first image sets it
    if n > 0 and (need_input_grad or need_weight_grad):
        nt = _threads_for(blocks * channel_blocks, <double> n * f * k * oh * ow)
        cols = np.empty((nt, 1 if pointwise else ((c + channel_blocks - 1) // channel_blocks) * weight.shape[2] * weight.shape[3] * oh * ow),
                        dtype=x.dtype)
        _conv_backward(x, weight.reshape(f, k), grad_y.reshape(n, f, oh * ow),
                       grad_x if need_input_grad else np.empty((1, 1, 1, 1), x.dtype),
                       parts if need_weight_grad else np.empty((blocks, 1, 1), x.dtype), cols,
                       need_input_grad, need_weight_grad, pointwise, channel_blocks,
                       weight.shape[2], weight.shape[3], stride[0], stride[1], padding[0], padding[1], oh, ow)
    if not need_weight_grad:
        return grad_x, None
    if n == 0:
        return grad_x, np.zeros_like(weight)
    return grad_x, add_blocks(parts).reshape(weight.shape)


cdef double _sum(const floating* x, Py_ssize_t n) noexcept nogil:
    """``Σ x[i]`` in sixteen running sums (over ``i mod 16``, in ``x``'s dtype: a plane is a few hundred
    values) added in double at the end. Sixteen chains of additions run side by side, in vector
    registers, where one would wait on each addition; the order is fixed (the same bits on any thread count)."""
    cdef floating lanes[16]
    cdef double total = 0
    cdef Py_ssize_t i, k, whole = n - n % 16
    for k in range(16):
        lanes[k] = 0
    for i in range(0, whole, 16):
        for k in range(16):
            lanes[k] += x[i + k]
    for i in range(whole, n):
        lanes[i - whole] += x[i]
    for k in range(16):
        total += lanes[k]
    return total


def _bias_backward(const floating[:, :, ::1] grad_y, double[::1] grad_b):
    cdef Py_ssize_t n = grad_y.shape[0], f = grad_y.shape[1], p = grad_y.shape[2], i, o
    cdef double total
    cdef int nt = _threads_for(f, <double> n * f * p)
    with nogil:
        for o in prange(f, schedule="static", num_threads=nt):
            total = 0
            for i in range(n):
                total = total + _sum(&grad_y[i, o, 0], p)
            grad_b[o] = total


def conv2d_bias_backward(grad_y):
    """Compiled :func:`nnscratch.backends.reference.conv2d_bias_backward`: ``∂L/∂b[f] = Σ_{n,i,j} ∂L/∂y[n,f,i,j]``,
    one filter per piece of work, summed in double then rounded to ``grad_y``'s dtype."""
    n, f, oh, ow = grad_y.shape
    grad_b = np.zeros(f, dtype=np.float64)
    if grad_y.size:
        _bias_backward(grad_y.reshape(n, f, oh * ow), grad_b)
    return grad_b.astype(grad_y.dtype)
