# cython: language_level=3
"""Compiled twins of :mod:`nnscratch.reference`: the same functions, the same signatures.

Every ``def`` here is called by :mod:`nnscratch.ops` only after the arguments were
validated in Python (ranks, shapes, dtypes, C-contiguity, positive strides), so the
``nogil`` loops below index without bounds checks. Each kernel is written once for
float32 and float64 through Cython's fused type ``floating``, releases the GIL and
splits its work across OpenMP threads with ``prange``: images, planes, fixed chunks of
elements, or fixed blocks of a matrix product. Every output element is written by exactly one
thread, in a fixed order, and every piece of work is cut by the shapes alone, never by the
thread count (a convolution's weight gradient is summed over batch blocks fixed by the batch
size), so results are bit-identical from run to run and across thread counts.

Convolution is lowered to matrix products one image at a time (im2col): thread ``t``
copies the windows of image ``n`` into its own buffer ``cols[k, i*OW + j]`` with
``k = (c*KH + p)*KW + q`` (``K × P``, ``P = OH*OW``, small enough to stay in cache), then
``y[n] = W_mat @ cols`` with ``W_mat = weight.reshape(F, K)``, written straight into the
NCHW output. That is the formula of :func:`nnscratch.reference.conv2d_forward` with the
sum over (c, p, q) done by a single-threaded BLAS call (scipy's ``cython_blas``); the
parallelism is ours, over images, so one pool of threads owns the cores (a multi-threaded
BLAS inside or beside OpenMP loops makes the two pools fight for them).

Sizes and indices are ``Py_ssize_t`` (64-bit) wherever they are multiplied; only BLAS takes C
``int`` sizes, and :mod:`nnscratch.ops` checks before the call that they fit (``_check_blas_sizes``
below checks again for callers that come straight here).
"""
import numpy as np
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.limits cimport INT_MAX
from libc.stdint cimport uint64_t
from scipy.linalg.cython_blas cimport dgemm, sgemm

from nnscratch.reference import SPLITMIX64_GAMMA, SPLITMIX64_MIX, dropout_threshold, output_size

cdef int _num_threads = 1


def set_num_threads(int n):
    """Set the number of OpenMP threads the kernels use (n >= 1)."""
    global _num_threads
    _num_threads = n


def get_num_threads():
    return _num_threads


cdef extern from *:
    """
    #ifdef _OPENMP
    #define NNSCRATCH_OPENMP 1
    #else
    #define NNSCRATCH_OPENMP 0
    #endif
    """
    int NNSCRATCH_OPENMP

OPENMP = bool(NNSCRATCH_OPENMP)


def _check_blas_sizes(*sizes):
    """Every size a kernel hands to BLAS must fit a C int (``ops`` checks first, naming the layer)."""
    for size in sizes:
        if size > INT_MAX:
            raise OverflowError(f"a matrix size of {size} exceeds what BLAS takes (C int, at most {INT_MAX})")


cdef inline void _gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, floating alpha,
                       const floating* a, Py_ssize_t lda, const floating* b, Py_ssize_t ldb, floating beta,
                       floating* c, Py_ssize_t ldc) noexcept nogil:
    """Row-major ``C (m×n) = alpha · op(A) op(B) + beta · C`` with ``op(A)`` m×k, ``op(B)`` k×n;
    ``lda``, ``ldb``, ``ldc`` are row strides. BLAS is column-major, where a row-major matrix
    reads as its transpose, so it computes ``Cᵀ = op(B)ᵀ op(A)ᵀ``: the operands swap. BLAS takes
    C ints: the sizes were checked to fit (``_check_blas_sizes``) before any kernel ran."""
    cdef char tb = b'T' if trans_b else b'N'
    cdef char ta = b'T' if trans_a else b'N'
    cdef int m_ = <int> m, n_ = <int> n, k_ = <int> k, lda_ = <int> lda, ldb_ = <int> ldb, ldc_ = <int> ldc
    if floating is float:
        sgemm(&tb, &ta, &n_, &m_, &k_, &alpha, <float*> b, &ldb_, <float*> a, &lda_, &beta, c, &ldc_)
    else:
        dgemm(&tb, &ta, &n_, &m_, &k_, &alpha, <double*> b, &ldb_, <double*> a, &lda_, &beta, c, &ldc_)


PARALLEL_MIN_WORK = 1 << 16  # multiply-adds below which one thread beats waking the others


cdef int _threads_for(Py_ssize_t pieces, double work) noexcept:
    """Threads for ``pieces`` independent pieces of ``work`` multiply-adds in all: no more threads than
    pieces, and one for small jobs (waking a thread costs more than it saves, and far more when
    another process holds the core it waits for)."""
    if work < PARALLEL_MIN_WORK:
        return 1
    return <int> max(1, min(_num_threads, pieces))


# ----------------------------------------------------------------------------- element-wise

cdef enum:
    ELEMENTWISE_CHUNK = 1 << 15  # elements per piece of work handed to a thread


# ``zero`` below is typed: a bare ``0`` would be the C double 0.0, turning float32 loops into
# float64 arithmetic with a conversion per element (several times slower).

cdef void _relu_chunk(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating zero = 0
    for i in range(n):
        y[i] = x[i] if (x[i] > zero) | (x[i] != x[i]) else zero  # NaN stays NaN


cdef void _relu_backward_chunk(const floating* y, const floating* g, floating* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating zero = 0, one = 1
    for i in range(n):
        # g · [y > 0], the reference's product bit for bit (g·0 is -0 for negative g, NaN for
        # infinite g); selecting the 0/1 factor, rather than the result, lets the loop vectorize
        out[i] = g[i] * (one if y[i] > zero else zero)


def _relu(const floating[::1] x, floating[::1] y):
    cdef Py_ssize_t n = x.shape[0], chunks = (n + ELEMENTWISE_CHUNK - 1) // ELEMENTWISE_CHUNK, c, start
    cdef int nt = _threads_for(chunks, <double> n)
    with nogil:
        for c in prange(chunks, schedule="static", num_threads=nt):
            start = c * ELEMENTWISE_CHUNK
            _relu_chunk(&x[start], &y[start], min(ELEMENTWISE_CHUNK, n - start))


def _relu_backward(const floating[::1] y, const floating[::1] g, floating[::1] out):
    cdef Py_ssize_t n = y.shape[0], chunks = (n + ELEMENTWISE_CHUNK - 1) // ELEMENTWISE_CHUNK, c, start
    cdef int nt = _threads_for(chunks, <double> n)
    with nogil:
        for c in prange(chunks, schedule="static", num_threads=nt):
            start = c * ELEMENTWISE_CHUNK
            _relu_backward_chunk(&y[start], &g[start], &out[start], min(ELEMENTWISE_CHUNK, n - start))


def relu_forward(x):
    """Compiled :func:`nnscratch.reference.relu_forward`: one pass, split across threads."""
    y = np.empty_like(x)
    if x.size:
        _relu(x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(y, grad_y):
    """Compiled :func:`nnscratch.reference.relu_backward`."""
    grad_x = np.empty_like(grad_y)
    if y.size:
        _relu_backward(y.reshape(-1), grad_y.reshape(-1), grad_x.reshape(-1))
    return grad_x


# ----------------------------------------------------------------------------- dropout

cdef uint64_t _GAMMA = SPLITMIX64_GAMMA, _MIX1 = SPLITMIX64_MIX[0], _MIX2 = SPLITMIX64_MIX[1]


cdef void _dropout_chunk(const floating* x, floating* y, Py_ssize_t n, uint64_t key, uint64_t first,
                         uint64_t threshold, floating scale) noexcept nogil:
    """``y[i] = x[i] · (scale if element first + i is kept else 0)``, the keep test of
    :func:`nnscratch.reference.dropout_keep_mask` (unsigned arithmetic wraps modulo 2⁶⁴, as there)."""
    cdef Py_ssize_t i
    cdef uint64_t z, gamma = _GAMMA, mix1 = _MIX1, mix2 = _MIX2
    cdef uint64_t weyl = key + first * gamma  # the Weyl sequence key + (first + i + 1) γ, step by step
    cdef floating factor[2]  # indexed by the keep flag: no unpredictable branch, and no integer-to-
    factor[0] = 0            # float conversion (whose false register dependency made it 4× slower)
    factor[1] = scale
    for i in range(n):
        weyl = weyl + gamma
        z = (weyl ^ (weyl >> 30)) * mix1
        z = (z ^ (z >> 27)) * mix2
        z = z ^ (z >> 31)
        # a product, as the reference: x · scale, or x · 0 (which is -0 or NaN where x is)
        y[i] = x[i] * factor[(z >> 32) >= threshold]


def _dropout(const floating[::1] x, floating[::1] y, uint64_t key, uint64_t threshold, floating scale):
    cdef Py_ssize_t n = x.shape[0], chunks = (n + ELEMENTWISE_CHUNK - 1) // ELEMENTWISE_CHUNK, c, start
    cdef int nt = _threads_for(chunks, <double> n * 8)  # ~8 integer operations per element
    with nogil:
        for c in prange(chunks, schedule="static", num_threads=nt):
            start = c * ELEMENTWISE_CHUNK
            _dropout_chunk(&x[start], &y[start], min(ELEMENTWISE_CHUNK, n - start), key, start, threshold, scale)


def dropout_forward(x, p, key):
    """Compiled :func:`nnscratch.reference.dropout_forward`: the mask is drawn and applied in one pass."""
    y = np.empty_like(x)
    if x.size:
        _dropout(x.reshape(-1), y.reshape(-1), key, dropout_threshold(p), x.dtype.type(1 / (1 - p)))
    return y


def dropout_backward(grad_y, p, key):
    """Compiled :func:`nnscratch.reference.dropout_backward` (the same pass over the gradient)."""
    return dropout_forward(grad_y, p, key)


# ----------------------------------------------------------------------------- SGD update

cdef void _sgd_chunk(floating* param, const floating* grad, floating* buffer, Py_ssize_t n, floating lr,
                     floating momentum, floating damp, bint dampen, floating weight_decay, bint decay,
                     bint nesterov, bint first) noexcept nogil:
    """:func:`nnscratch.reference.sgd_update` on ``n`` elements, one pass, rounding as NumPy's
    sequence of whole-array operations does (one rounding per operation; the build forbids fusing a
    multiply and an add into one FMA). ``buffer`` is NULL without momentum; ``damp`` is ``1 - τ``."""
    cdef Py_ssize_t i
    cdef floating g
    for i in range(n):
        g = grad[i]
        if decay:
            g = g + weight_decay * param[i]
        if buffer != NULL:
            if first:
                buffer[i] = g
            elif dampen:
                buffer[i] = buffer[i] * momentum + damp * g
            else:
                buffer[i] = buffer[i] * momentum + g
            g = g + momentum * buffer[i] if nesterov else buffer[i]
        param[i] = param[i] - lr * g


def _sgd(floating[::1] param, const floating[::1] grad, floating[::1] buffer, bint has_buffer, floating lr,
         floating momentum, floating damp, bint dampen, floating weight_decay, bint decay, bint nesterov,
         bint first):
    cdef Py_ssize_t n = param.shape[0], chunks = (n + ELEMENTWISE_CHUNK - 1) // ELEMENTWISE_CHUNK, c, start
    cdef int nt = _threads_for(chunks, <double> n)
    with nogil:
        for c in prange(chunks, schedule="static", num_threads=nt):
            start = c * ELEMENTWISE_CHUNK
            _sgd_chunk(&param[start], &grad[start], &buffer[start] if has_buffer else NULL,
                       min(ELEMENTWISE_CHUNK, n - start), lr, momentum, damp, dampen, weight_decay, decay,
                       nesterov, first)


def sgd_update(param, grad, buffer, lr, momentum, dampening, weight_decay, nesterov, first):
    """Compiled :func:`nnscratch.reference.sgd_update`: every element updated in one pass."""
    if param.size == 0:
        return
    t = param.dtype.type
    flat = param.reshape(-1)
    _sgd(flat, grad.reshape(-1), flat if buffer is None else buffer.reshape(-1), buffer is not None,
         t(lr), t(momentum), t(1 - dampening), dampening != 0, t(weight_decay), weight_decay != 0, nesterov, first)


# ----------------------------------------------------------------------------- matrix product

MATMUL_BLOCKS = 4  # a matrix product big enough for threads is cut into this many blocks


cdef Py_ssize_t _matmul_blocks(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, bint* by_rows, Py_ssize_t* length):
    """How ``_matmul`` cuts an (m×k)·(k×n) product: along the rows of ``c`` (``by_rows``) or its
    columns, whichever is longer (``length``); returns the number of blocks. Block ``i`` covers
    ``[length·i // blocks, length·(i+1) // blocks)`` (``_block_start``), in 64-bit arithmetic."""
    by_rows[0] = m >= n
    length[0] = m if by_rows[0] else n
    return 1 if <double> m * n * k < PARALLEL_MIN_WORK else min(length[0], <Py_ssize_t> MATMUL_BLOCKS)


cdef inline Py_ssize_t _block_start(Py_ssize_t length, Py_ssize_t i, Py_ssize_t blocks) noexcept nogil:
    return (length * i) // blocks


def matmul_blocks(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k):
    """The blocks of ``_matmul`` for an (m×k)·(k×n) product, as ``("rows" or "columns", [(lo, hi), ...])``
    (shown, and tested for sizes too large to allocate)."""
    cdef bint by_rows
    cdef Py_ssize_t length, blocks = _matmul_blocks(m, n, k, &by_rows, &length), i
    return ("rows" if by_rows else "columns",
            [(_block_start(length, i, blocks), _block_start(length, i + 1, blocks)) for i in range(blocks)])


def _matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c,
            bint trans_a, bint trans_b):
    """``c = op(a) @ op(b)``, cut into blocks of rows of ``c`` or of columns, whichever side is
    longer (a block then reads only its share of the larger operand: BLAS copies every operand
    into its own packed layout, so cutting the short side would have each block pack the whole
    large matrix). The blocks depend on the shapes only, never on the thread count: BLAS picks
    its kernels by size, so blocks that changed with the threads would change the rounding."""
    cdef Py_ssize_t m = c.shape[0], n = c.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef bint by_rows
    cdef Py_ssize_t length, blocks = _matmul_blocks(m, n, k, &by_rows, &length), i, lo, hi
    cdef int nt = _threads_for(blocks, <double> m * n * k)
    cdef const floating* a_block
    cdef const floating* b_block
    if m == 0 or n == 0:
        return
    if k == 0:
        c[:, :] = 0
        return
    _check_blas_sizes(m, n, k, a.shape[1], b.shape[1])
    with nogil:
        for i in prange(blocks, schedule="static", num_threads=nt):
            lo = _block_start(length, i, blocks)
            hi = _block_start(length, i + 1, blocks)
            if by_rows:  # rows lo..hi of op(a): rows of a, or (transposed) columns of a
                a_block = &a[0, lo] if trans_a else &a[lo, 0]
                _gemm(trans_a, trans_b, hi - lo, n, k, 1, a_block, a.shape[1], &b[0, 0], b.shape[1],
                      0, &c[lo, 0], c.shape[1])
            else:  # columns lo..hi of op(b): columns of b, or (transposed) rows of b
                b_block = &b[lo, 0] if trans_b else &b[0, lo]
                _gemm(trans_a, trans_b, m, hi - lo, k, 1, &a[0, 0], a.shape[1], b_block, b.shape[1],
                      0, &c[0, lo], c.shape[1])


def linear_forward(x, weight, bias):
    """Compiled :func:`nnscratch.reference.linear_forward`: ``y = x Wᵀ + b``."""
    y = np.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)
    _matmul(x, weight, y, False, True)
    if bias is not None:
        y += bias
    return y


def linear_backward(x, weight, grad_y, need_input_grad=True, need_weight_grad=True):
    """Compiled :func:`nnscratch.reference.linear_backward`: ``(∂L/∂y) W`` and ``(∂L/∂y)ᵀ x``."""
    grad_x = grad_weight = None
    if need_weight_grad:
        grad_weight = np.empty_like(weight)
        _matmul(grad_y, x, grad_weight, True, False)
    if need_input_grad:
        grad_x = np.empty_like(x)
        _matmul(grad_y, weight, grad_x, False, False)
    return grad_x, grad_weight


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


cdef void _im2col_image(const floating* x, floating* cols, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                        int kh, int kw, int sh, int sw, int ph, int pw,
                        Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """``cols[(c*KH + p)*KW + q, i*OW + j] = x_pad[c, i*sh + p, j*sw + q]`` for one image ``x`` (C, H, W)."""
    cdef Py_ssize_t c, p, q, i, j, row, j_lo, j_hi, P = oh * ow
    cdef floating* out
    cdef const floating* src
    for c in range(C):
        for p in range(kh):
            for q in range(kw):
                out = cols + ((c * kh + p) * kw + q) * P
                _valid_columns(ow, W, sw, q - pw, &j_lo, &j_hi)
                for i in range(oh):
                    row = i * sh + p - ph
                    if row < 0 or row >= H:
                        for j in range(ow):
                            out[i * ow + j] = 0
                        continue
                    src = x + (c * H + row) * W + q - pw
                    for j in range(j_lo):
                        out[i * ow + j] = 0
                    if sw == 1:  # a contiguous run: the compiler vectorizes this copy
                        for j in range(j_lo, j_hi):
                            out[i * ow + j] = src[j]
                    else:
                        for j in range(j_lo, j_hi):
                            out[i * ow + j] = src[j * sw]
                    for j in range(j_hi, ow):
                        out[i * ow + j] = 0


cdef void _col2im_image(const floating* cols, floating* grad_x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                        int kh, int kw, int sh, int sw, int ph, int pw,
                        Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """The adjoint of ``_im2col_image``: ``grad_x[c, i*sh+p-ph, j*sw+q-pw] += cols[k, i*OW + j]``
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
                  bint has_bias, floating[:, :, ::1] y, floating[:, :, ::1] cols,
                  int kh, int kw, int sh, int sw, int ph, int pw, Py_ssize_t oh, Py_ssize_t ow):
    """Per image n: ``cols = im2col(x[n])``; ``y[n] = wmat @ cols (+ bias)``. ``cols[t]`` is thread t's buffer."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = wmat.shape[0], K = wmat.shape[1], P = oh * ow, n
    cdef int nt = cols.shape[0], t
    with nogil, parallel(num_threads=nt):
        t = threadid()
        for n in prange(N, schedule="static"):
            _im2col_image(&x[n, 0, 0, 0], &cols[t, 0, 0], C, H, W, kh, kw, sh, sw, ph, pw, oh, ow)
            _gemm(False, False, F, P, K, 1, &wmat[0, 0], K, &cols[t, 0, 0], P, 0, &y[n, 0, 0], P)
            if has_bias:
                _add_row_bias(&y[n, 0, 0], &bias[0], F, P)


cdef void _add_row_bias(floating* y, const floating* bias, Py_ssize_t rows, Py_ssize_t length) noexcept nogil:
    """``y[r, :] += bias[r]`` for a (rows, length) block."""
    cdef Py_ssize_t r, i
    cdef floating b
    for r in range(rows):
        b = bias[r]
        for i in range(length):
            y[r * length + i] += b


def _conv_backward(const floating[:, :, :, ::1] x, const floating[:, ::1] wmat, const floating[:, :, ::1] grad_y,
                   floating[:, :, :, ::1] grad_x, floating[:, :, ::1] grad_w_blocks,
                   floating[:, :, ::1] cols, bint need_input_grad, bint need_weight_grad,
                   int kh, int kw, int sh, int sw, int ph, int pw, Py_ssize_t oh, Py_ssize_t ow):
    """For every image n of block b (on thread t): ``grad_w_blocks[b] += grad_y[n] @ im2col(x[n])ᵀ`` and
    ``grad_x[n] = col2im(wmatᵀ @ grad_y[n])``. The caller sums ``grad_w_blocks`` over b. The blocks
    depend on the batch size only, not on the thread count, so neither does the result."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = wmat.shape[0], K = wmat.shape[1], P = oh * ow, blocks = grad_w_blocks.shape[0], b, n
    cdef int nt = cols.shape[0], t
    with nogil, parallel(num_threads=nt):
        t = threadid()
        for b in prange(blocks, schedule="static"):
            for n in range((N * b) // blocks, (N * (b + 1)) // blocks):
                if need_weight_grad:
                    _im2col_image(&x[n, 0, 0, 0], &cols[t, 0, 0], C, H, W, kh, kw, sh, sw, ph, pw, oh, ow)
                    _gemm(False, True, F, K, P, 1, &grad_y[n, 0, 0], P, &cols[t, 0, 0], P,
                          1, &grad_w_blocks[b, 0, 0], K)
                if need_input_grad:
                    _gemm(True, False, K, P, F, 1, &wmat[0, 0], K, &grad_y[n, 0, 0], P, 0, &cols[t, 0, 0], P)
                    _col2im_image(&cols[t, 0, 0], &grad_x[n, 0, 0, 0], C, H, W, kh, kw, sh, sw, ph, pw, oh, ow)


WEIGHT_GRAD_BLOCKS = 16  # the batch is cut into at most this many blocks of images for ∂L/∂W


def _geometry(x, weight, stride, padding):
    """(K, OH, OW, threads) of a convolution: ``K = C·KH·KW`` rows per im2col buffer."""
    n, c, h, w = x.shape
    kh, kw = weight.shape[2], weight.shape[3]
    oh, ow = output_size(h, kh, stride[0], padding[0]), output_size(w, kw, stride[1], padding[1])
    _check_blas_sizes(weight.shape[0], c * kh * kw, oh * ow)
    return c * kh * kw, oh, ow, _threads_for(n, <double> n * weight.shape[0] * c * kh * kw * oh * ow)


def conv2d_forward(x, weight, bias, stride, padding):
    """Compiled :func:`nnscratch.reference.conv2d_forward`: per image, im2col then one GEMM."""
    k, oh, ow, nt = _geometry(x, weight, stride, padding)
    n, f = x.shape[0], weight.shape[0]
    y = np.empty((n, f, oh * ow), dtype=x.dtype)
    if y.size == 0:
        return y.reshape(n, f, oh, ow)
    cols = np.empty((nt, k, oh * ow), dtype=x.dtype)
    has_bias = bias is not None
    _conv_forward(x, weight.reshape(f, k), bias if has_bias else np.zeros(f, x.dtype), has_bias, y, cols,
                  weight.shape[2], weight.shape[3], stride[0], stride[1], padding[0], padding[1], oh, ow)
    return y.reshape(n, f, oh, ow)


def conv2d_backward(x, weight, grad_y, stride, padding, need_input_grad=True, need_weight_grad=True):
    """Compiled :func:`nnscratch.reference.conv2d_backward`.

    ``∂L/∂W_mat = Σ_n grad_y[n] @ im2col(x[n])ᵀ`` and ``∂L/∂x[n] = col2im(W_matᵀ @ grad_y[n])``:
    col2im sums every window's share back onto the input pixels it came from.
    """
    k, oh, ow, nt = _geometry(x, weight, stride, padding)
    n, f = x.shape[0], weight.shape[0]
    blocks = max(1, min(n, WEIGHT_GRAD_BLOCKS))
    grad_x = np.empty_like(x) if need_input_grad else None  # every image's col2im overwrites its slice
    parts = np.zeros((blocks, f, k), dtype=x.dtype) if need_weight_grad else None
    if n > 0 and (need_input_grad or need_weight_grad):
        cols = np.empty((_threads_for(blocks, <double> n * f * k * oh * ow), k, oh * ow), dtype=x.dtype)
        _conv_backward(x, weight.reshape(f, k), grad_y.reshape(n, f, oh * ow),
                       grad_x if need_input_grad else np.empty((1, 1, 1, 1), x.dtype),
                       parts if need_weight_grad else np.empty((blocks, 1, 1), x.dtype), cols,
                       need_input_grad, need_weight_grad,
                       weight.shape[2], weight.shape[3], stride[0], stride[1], padding[0], padding[1], oh, ow)
    grad_weight = parts.sum(axis=0).reshape(weight.shape) if need_weight_grad else None
    return grad_x, grad_weight


# ----------------------------------------------------------------------------- pooling
#
# Pooling works plane by plane: an (n, c) pair is one H × W plane, and planes are independent.

cdef inline void _window_range(Py_ssize_t start, int k, Py_ssize_t size, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Offsets ``[lo, hi)`` of a length-``k`` window starting at ``start`` that fall inside ``[0, size)``."""
    lo[0] = -start if start < 0 else 0
    hi[0] = size - start if start + k > size else k


cdef void _maxpool_plane(const floating* x, floating* y, long long* argmax, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t oh, Py_ssize_t ow, int kh, int kw, int sh, int sw, int ph, int pw) noexcept nogil:
    """``y[i, j] = max`` over the window at ``(i*sh - ph, j*sw - pw)``; ``argmax`` its flat index ``row*W + col``.
    The first maximum in row-major window order wins; a NaN wins over any number. The comparison is
    branch-free (selects, not jumps): on real data the winner is unpredictable."""
    cdef Py_ssize_t i, j, p, q, r0, c0, p_lo, p_hi, q_lo, q_hi, at, best_at, keep
    cdef floating best, v
    cdef bint take
    for i in range(oh):
        r0 = i * sh - ph
        _window_range(r0, kh, H, &p_lo, &p_hi)
        for j in range(ow):
            c0 = j * sw - pw
            _window_range(c0, kw, W, &q_lo, &q_hi)
            best_at = (r0 + p_lo) * W + c0 + q_lo
            for p in range(p_lo, p_hi):
                for q in range(q_lo, q_hi):
                    at = (r0 + p) * W + c0 + q
                    v = x[at]
                    best = x[best_at]
                    take = (v > best) | ((v != v) & (best == best))
                    keep = <Py_ssize_t> take - 1  # all ones to keep best_at, zero to take at
                    best_at = (best_at & keep) | (at & ~keep)
            y[i * ow + j] = x[best_at]
            argmax[i * ow + j] = best_at


cdef void _maxpool_plane_backward(const floating* grad_y, const long long* argmax, floating* grad_x,
                                  Py_ssize_t hw, Py_ssize_t outputs) noexcept nogil:
    """``grad_x[argmax[o]] += grad_y[o]`` over one plane (``grad_x`` overwritten)."""
    cdef Py_ssize_t o
    for o in range(hw):
        grad_x[o] = 0
    for o in range(outputs):
        grad_x[argmax[o]] += grad_y[o]


cdef void _avgpool_plane(const floating* x, floating* y, Py_ssize_t H, Py_ssize_t W, Py_ssize_t oh, Py_ssize_t ow,
                         int kh, int kw, int sh, int sw, int ph, int pw) noexcept nogil:
    """``y[i, j] = (Σ over the window) / (kh·kw)``; padding pixels count as zeros. The area is a 64-bit
    integer (kh·kw reaches 2⁶²) and the division is done in double, then rounded to the dtype, as
    NumPy's ``mean`` (the reference) does."""
    cdef Py_ssize_t i, j, p, q, r0, c0, p_lo, p_hi, q_lo, q_hi
    cdef floating total
    cdef double area = <double> (<long long> kh * kw)
    for i in range(oh):
        r0 = i * sh - ph
        _window_range(r0, kh, H, &p_lo, &p_hi)
        for j in range(ow):
            c0 = j * sw - pw
            _window_range(c0, kw, W, &q_lo, &q_hi)
            total = 0
            for p in range(p_lo, p_hi):
                for q in range(q_lo, q_hi):
                    total = total + x[(r0 + p) * W + c0 + q]
            y[i * ow + j] = <floating> (total / area)


cdef void _avgpool_plane_backward(const floating* grad_y, floating* grad_x, Py_ssize_t H, Py_ssize_t W,
                                  Py_ssize_t oh, Py_ssize_t ow, int kh, int kw, int sh, int sw,
                                  int ph, int pw) noexcept nogil:
    """Every pixel of window (i, j) receives ``grad_y[i, j] / (kh·kw)`` (``grad_x`` overwritten); the
    area is a 64-bit integer rounded once to the dtype, as the reference's ``grad_y / (kh * kw)``."""
    cdef Py_ssize_t i, j, p, q, r0, c0, p_lo, p_hi, q_lo, q_hi
    cdef floating share, area = <floating> (<long long> kh * kw)
    for i in range(H * W):
        grad_x[i] = 0
    for i in range(oh):
        r0 = i * sh - ph
        _window_range(r0, kh, H, &p_lo, &p_hi)
        for j in range(ow):
            c0 = j * sw - pw
            _window_range(c0, kw, W, &q_lo, &q_hi)
            share = grad_y[i * ow + j] / area
            for p in range(p_lo, p_hi):
                for q in range(q_lo, q_hi):
                    grad_x[(r0 + p) * W + c0 + q] += share


def _maxpool_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y, long long[:, :, ::1] argmax,
                     int kh, int kw, int sh, int sw, int ph, int pw):
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2], oh = y.shape[1], ow = y.shape[2], s
    cdef int nt = _threads_for(planes, <double> planes * oh * ow * kh * kw)
    with nogil:
        for s in prange(planes, schedule="static", num_threads=nt):
            _maxpool_plane(&x[s, 0, 0], &y[s, 0, 0], &argmax[s, 0, 0], H, W, oh, ow, kh, kw, sh, sw, ph, pw)


def _maxpool_backward(const floating[:, ::1] grad_y, const long long[:, ::1] argmax, floating[:, ::1] grad_x):
    cdef Py_ssize_t planes = grad_x.shape[0], hw = grad_x.shape[1], outputs = grad_y.shape[1], s
    cdef int nt = _threads_for(planes, <double> planes * (hw + outputs))
    with nogil:
        for s in prange(planes, schedule="static", num_threads=nt):
            _maxpool_plane_backward(&grad_y[s, 0], &argmax[s, 0], &grad_x[s, 0], hw, outputs)


def _avgpool_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y, int kh, int kw, int sh, int sw, int ph, int pw):
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2], oh = y.shape[1], ow = y.shape[2], s
    cdef int nt = _threads_for(planes, <double> planes * oh * ow * kh * kw)
    with nogil:
        for s in prange(planes, schedule="static", num_threads=nt):
            _avgpool_plane(&x[s, 0, 0], &y[s, 0, 0], H, W, oh, ow, kh, kw, sh, sw, ph, pw)


def _avgpool_backward(const floating[:, :, ::1] grad_y, floating[:, :, ::1] grad_x,
                      int kh, int kw, int sh, int sw, int ph, int pw):
    cdef Py_ssize_t planes = grad_x.shape[0], H = grad_x.shape[1], W = grad_x.shape[2]
    cdef Py_ssize_t oh = grad_y.shape[1], ow = grad_y.shape[2], s
    cdef int nt = _threads_for(planes, <double> planes * (H * W + <double> oh * ow * kh * kw))
    with nogil:
        for s in prange(planes, schedule="static", num_threads=nt):
            _avgpool_plane_backward(&grad_y[s, 0, 0], &grad_x[s, 0, 0], H, W, oh, ow, kh, kw, sh, sw, ph, pw)


def _pool_output(x, kernel, stride, padding):
    n, c, h, w = x.shape
    return n, c, output_size(h, kernel[0], stride[0], padding[0]), output_size(w, kernel[1], stride[1], padding[1])


def maxpool2d_forward(x, kernel, stride, padding):
    """Compiled :func:`nnscratch.reference.maxpool2d_forward` (same tie rule, same indices)."""
    n, c, oh, ow = _pool_output(x, kernel, stride, padding)
    y = np.empty((n * c, oh, ow), dtype=x.dtype)
    argmax = np.empty((n * c, oh, ow), dtype=np.int64)
    if y.size:
        _maxpool_forward(x.reshape(n * c, x.shape[2], x.shape[3]), y, argmax, kernel[0], kernel[1],
                         stride[0], stride[1], padding[0], padding[1])
    return y.reshape(n, c, oh, ow), argmax.reshape(n, c, oh, ow)


def maxpool2d_backward(grad_y, argmax, input_shape):
    """Compiled :func:`nnscratch.reference.maxpool2d_backward`."""
    n, c, h, w = input_shape
    grad_x = np.empty((n * c, h * w), dtype=grad_y.dtype)  # each plane is zeroed, then scattered into
    if grad_x.size:  # (then grad_y has planes too)
        _maxpool_backward(grad_y.reshape(n * c, -1), argmax.reshape(n * c, -1), grad_x)
    return grad_x.reshape(input_shape)


def avgpool2d_forward(x, kernel, stride, padding):
    """Compiled :func:`nnscratch.reference.avgpool2d_forward` (padding counts in the mean)."""
    n, c, oh, ow = _pool_output(x, kernel, stride, padding)
    y = np.empty((n * c, oh, ow), dtype=x.dtype)
    if y.size:
        _avgpool_forward(x.reshape(n * c, x.shape[2], x.shape[3]), y, kernel[0], kernel[1],
                         stride[0], stride[1], padding[0], padding[1])
    return y.reshape(n, c, oh, ow)


def avgpool2d_backward(grad_y, input_shape, kernel, stride, padding):
    """Compiled :func:`nnscratch.reference.avgpool2d_backward`."""
    n, c, h, w = input_shape
    grad_x = np.empty((n * c, h, w), dtype=grad_y.dtype)  # each plane is zeroed, then summed into
    if grad_x.size:
        _avgpool_backward(grad_y.reshape(n * c, grad_y.shape[2], grad_y.shape[3]), grad_x,
                          kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1])
    return grad_x.reshape(input_shape)
