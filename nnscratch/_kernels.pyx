# cython: language_level=3
"""Compiled twins of :mod:`nnscratch.backends.reference`: the same functions, the same signatures.

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
NCHW output. That is the formula of :func:`nnscratch.backends.reference.conv2d_forward` with the
sum over (c, p, q) done by a single-threaded BLAS call (scipy's ``cython_blas``, held at one
thread while a kernel runs: ``nnscratch.backends.kernel_blas``); the parallelism is ours, over
images, so one pool of threads owns the cores (a multi-threaded BLAS inside or beside OpenMP
loops makes the two pools fight for them). A large image is cut further, into blocks of output rows
(forward) or, when the batch has too few images for the threads, of input channels (backward); a
pointwise convolution (1×1, stride 1, no padding) skips im2col: see ``_kernels_conv.pxi``.

This file holds the shared pieces, the element-wise kernels, SGD and the matrix product; the
convolution kernels are in ``_kernels_conv.pxi``, the pooling kernels in ``_kernels_pool.pxi`` and
Winograd's convolution in ``_kernels_winograd.pxi`` with its transforms in ``_kernels_winograd_transforms.pxi``,
included at the end (one extension module, ``nnscratch._kernels``).

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

from nnscratch.backends.reference import (SPLITMIX64_GAMMA, SPLITMIX64_MIX, argmax_outside_message, dropout_threshold,
                                         output_size)

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
    """Compiled :func:`nnscratch.backends.reference.relu_forward`: one pass, split across threads."""
    y = np.empty_like(x)
    if x.size:
        _relu(x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(y, grad_y):
    """Compiled :func:`nnscratch.backends.reference.relu_backward`."""
    grad_x = np.empty_like(grad_y)
    if y.size:
        _relu_backward(y.reshape(-1), grad_y.reshape(-1), grad_x.reshape(-1))
    return grad_x


def _add_blocks(const floating[:, ::1] parts, floating[::1] total):
    cdef Py_ssize_t blocks = parts.shape[0], size = parts.shape[1], c, i, b, lo, hi
    cdef Py_ssize_t chunks = (size + ELEMENTWISE_CHUNK - 1) // ELEMENTWISE_CHUNK
    cdef int nt = _threads_for(chunks, <double> blocks * size)
    with nogil:
        for c in prange(chunks, schedule="static", num_threads=nt):
            lo = c * ELEMENTWISE_CHUNK
            hi = min(size, lo + ELEMENTWISE_CHUNK)
            for i in range(lo, hi):
                total[i] = parts[0, i]
            for b in range(1, blocks):
                for i in range(lo, hi):
                    total[i] += parts[b, i]


def add_blocks(parts):
    """``Σ_b parts[b]`` added in block order, as NumPy's ``parts.sum(axis=0)`` does (the same bits), cut
    into chunks of elements across threads: how every kernel that sums partial results in blocks fixed
    by the shapes (matrix products cut along their depth, weight gradients) adds them up."""
    total = np.empty(parts.shape[1:], dtype=parts.dtype)
    if total.size:
        _add_blocks(parts.reshape(parts.shape[0], -1), total.reshape(-1))
    return total


# ----------------------------------------------------------------------------- dropout

cdef uint64_t _GAMMA = SPLITMIX64_GAMMA, _MIX1 = SPLITMIX64_MIX[0], _MIX2 = SPLITMIX64_MIX[1]


cdef void _dropout_chunk(const floating* x, floating* y, Py_ssize_t n, uint64_t key, uint64_t first,
                         uint64_t threshold, floating scale) noexcept nogil:
    """``y[i] = x[i] · (scale if element first + i is kept else 0)``, the keep test of
    :func:`nnscratch.backends.reference.dropout_keep_mask` (unsigned arithmetic wraps modulo 2⁶⁴, as there)."""
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
    """Compiled :func:`nnscratch.backends.reference.dropout_forward`: the mask is drawn and applied in one pass."""
    y = np.empty_like(x)
    if x.size:
        _dropout(x.reshape(-1), y.reshape(-1), key, dropout_threshold(p), x.dtype.type(1 / (1 - p)))
    return y


def dropout_backward(grad_y, p, key):
    """Compiled :func:`nnscratch.backends.reference.dropout_backward` (the same pass over the gradient)."""
    return dropout_forward(grad_y, p, key)


# ----------------------------------------------------------------------------- SGD update

cdef void _sgd_chunk(floating* param, const floating* grad, floating* buffer, Py_ssize_t n, floating lr,
                     floating momentum, floating damp, bint dampen, floating weight_decay, bint decay,
                     bint nesterov, bint first) noexcept nogil:
    """:func:`nnscratch.backends.reference.sgd_update` on ``n`` elements, one pass, rounding as NumPy's
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
    """Compiled :func:`nnscratch.backends.reference.sgd_update`: every element updated in one pass."""
    if param.size == 0:
        return
    t = param.dtype.type
    flat = param.reshape(-1)
    _sgd(flat, grad.reshape(-1), flat if buffer is None else buffer.reshape(-1), buffer is not None,
         t(lr), t(momentum), t(1 - dampening), dampening != 0, t(weight_decay), weight_decay != 0, nesterov, first)


# ----------------------------------------------------------------------------- matrix product

MATMUL_BLOCKS = 4  # a matrix product big enough for threads is cut into this many blocks

cdef enum:
    BY_ROWS, BY_COLUMNS, BY_DEPTH  # the side of an (m×k)·(k×n) product that _matmul cuts

MATMUL_SIDES = ("rows", "columns", "depth")


cdef Py_ssize_t _matmul_blocks(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, int* side, Py_ssize_t* length):
    """How ``_matmul`` cuts an (m×k)·(k×n) product: along its longest side (``length``): the rows of
    ``c`` (m), its columns (n), or the depth k of the sum; returns the number of blocks. Block ``i``
    covers ``[length·i // blocks, length·(i+1) // blocks)`` (``_block_start``), in 64-bit arithmetic."""
    cdef bint small = <double> m * n * k < PARALLEL_MIN_WORK  # one block: no depth cut (nothing to add up)
    side[0] = BY_DEPTH if k > max(m, n) and not small else (BY_ROWS if m >= n else BY_COLUMNS)
    length[0] = k if side[0] == BY_DEPTH else (m if side[0] == BY_ROWS else n)
    return 1 if small else min(length[0], <Py_ssize_t> MATMUL_BLOCKS)


cdef inline Py_ssize_t _block_start(Py_ssize_t length, Py_ssize_t i, Py_ssize_t blocks) noexcept nogil:
    return (length * i) // blocks


def matmul_blocks(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k):
    """The blocks of ``_matmul`` for an (m×k)·(k×n) product, as ``("rows", "columns" or "depth", [(lo, hi), ...])``
    (shown, and tested for sizes too large to allocate)."""
    cdef int side
    cdef Py_ssize_t length, blocks = _matmul_blocks(m, n, k, &side, &length), i
    return (MATMUL_SIDES[side], [(_block_start(length, i, blocks), _block_start(length, i + 1, blocks)) for i in range(blocks)])


def _matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c,
            bint trans_a, bint trans_b):
    """``c = op(a) @ op(b)``, cut into blocks along its longest side, a block then reading only its
    share of the larger operands (BLAS copies every operand into its own packed layout, so cutting a
    short side would have each block pack a whole large matrix): rows of ``c``, columns of ``c``, or
    the depth of the sum, ``c = Σ_i op(a)[:, K_i] @ op(b)[K_i, :]``, each block's product in its own
    buffer ``parts[i]``, added in block order. The blocks depend on the shapes only, never on the
    thread count: BLAS picks its kernels by size, so blocks that changed with the threads would change
    the rounding."""
    cdef Py_ssize_t m = c.shape[0], n = c.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef int side
    cdef Py_ssize_t length, blocks = _matmul_blocks(m, n, k, &side, &length), i, lo, hi
    cdef int nt = _threads_for(blocks, <double> m * n * k)
    cdef const floating* a_block
    cdef const floating* b_block
    cdef floating[:, :, ::1] parts
    if m == 0 or n == 0:
        return
    if k == 0:
        c[:, :] = 0
        return
    _check_blas_sizes(m, n, k, a.shape[1], b.shape[1])
    out = np.asarray(c)
    parts = np.empty((1, 1, 1), dtype=out.dtype)
    if side == BY_DEPTH:
        parts = np.empty((blocks, m, n), dtype=out.dtype)
    with nogil:
        for i in prange(blocks, schedule="static", num_threads=nt):
            lo = _block_start(length, i, blocks)
            hi = _block_start(length, i + 1, blocks)
            if side == BY_ROWS:  # rows lo..hi of op(a): rows of a, or (transposed) columns of a
                a_block = &a[0, lo] if trans_a else &a[lo, 0]
                _gemm(trans_a, trans_b, hi - lo, n, k, 1, a_block, a.shape[1], &b[0, 0], b.shape[1],
                      0, &c[lo, 0], c.shape[1])
            elif side == BY_COLUMNS:  # columns lo..hi of op(b): columns of b, or (transposed) rows of b
                b_block = &b[lo, 0] if trans_b else &b[0, lo]
                _gemm(trans_a, trans_b, m, hi - lo, k, 1, &a[0, 0], a.shape[1], b_block, b.shape[1],
                      0, &c[0, lo], c.shape[1])
            else:  # columns lo..hi of op(a) and rows lo..hi of op(b)
                a_block = &a[lo, 0] if trans_a else &a[0, lo]
                b_block = &b[0, lo] if trans_b else &b[lo, 0]
                _gemm(trans_a, trans_b, m, n, hi - lo, 1, a_block, a.shape[1], b_block, b.shape[1],
                      0, &parts[i, 0, 0], n)
    if side == BY_DEPTH:  # added in block order, whatever the threads
        out[...] = add_blocks(np.asarray(parts))


def linear_forward(x, weight, bias):
    """Compiled :func:`nnscratch.backends.reference.linear_forward`: ``y = x Wᵀ + b``."""
    y = np.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)
    _matmul(x, weight, y, False, True)
    if bias is not None:
        y += bias
    return y


def linear_backward(x, weight, grad_y, need_input_grad=True, need_weight_grad=True):
    """Compiled :func:`nnscratch.backends.reference.linear_backward`: ``(∂L/∂y) W`` and ``(∂L/∂y)ᵀ x``."""
    grad_x = grad_weight = None
    if need_weight_grad:
        grad_weight = np.empty_like(weight)
        _matmul(grad_y, x, grad_weight, True, False)
    if need_input_grad:
        grad_x = np.empty_like(x)
        _matmul(grad_y, weight, grad_x, False, False)
    return grad_x, grad_weight


# ----------------------------------------------------------------------------- convolution and pooling
# In two files of their own (Cython's textual include: the same module, its shared pieces above)

include "_kernels_conv.pxi"
include "_kernels_pool.pxi"
include "_kernels_winograd_transforms.pxi"
include "_kernels_winograd.pxi"
