# cython: language_level=3
"""Compiled twins of :mod:`nnscratch.reference`: the same functions, the same signatures.

Every ``def`` here is called by :mod:`nnscratch.ops` only after the arguments were
validated in Python (ranks, shapes, dtypes, C-contiguity, positive strides), so the
``nogil`` loops below index without bounds checks. Each kernel is written once for
float32 and float64 through Cython's fused type ``floating``, releases the GIL and
splits the batch (or the batch × channel planes) across OpenMP threads with ``prange``.
Every output element is written by exactly one thread, in a fixed order, so results
are bit-identical from run to run for a given thread count.

Convolution is lowered to one matrix product (im2col): the windows of the whole batch
are copied into ``cols[k, n*P + i*OW + j]`` with ``k = (c*KH + p)*KW + q`` and
``P = OH*OW``, then ``y = W_mat @ cols`` with ``W_mat = weight.reshape(F, K)``. That is
the formula of :func:`nnscratch.reference.conv2d_forward` with the sum over (c, p, q)
done by BLAS.
"""
import numpy as np
cimport cython
from cython cimport floating
from cython.parallel cimport prange

cdef int _num_threads = 1


def set_num_threads(int n):
    """Set the number of OpenMP threads the kernels use (n >= 1)."""
    global _num_threads
    _num_threads = n


def get_num_threads():
    return _num_threads


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return _OPENMP


cdef extern from *:
    """
    #ifdef _OPENMP
    #define NNSCRATCH_OPENMP 1
    #else
    #define NNSCRATCH_OPENMP 0
    #endif
    """
    int NNSCRATCH_OPENMP

_OPENMP = bool(NNSCRATCH_OPENMP)


# ----------------------------------------------------------------------------- im2col / col2im

cdef void _im2col_image(const floating[:, :, :, ::1] x, floating[:, ::1] cols, Py_ssize_t n,
                        int kh, int kw, int sh, int sw, int ph, int pw,
                        Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """cols[(c*KH + p)*KW + q, n*P + i*OW + j] = x_pad[n, c, i*sh + p, j*sw + q] for one image n."""
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t c, p, q, i, j, k, row, col, base = n * oh * ow
    for c in range(C):
        for p in range(kh):
            for q in range(kw):
                k = (c * kh + p) * kw + q
                for i in range(oh):
                    row = i * sh + p - ph
                    col = base + i * ow
                    if row < 0 or row >= H:
                        for j in range(ow):
                            cols[k, col + j] = 0
                        continue
                    for j in range(ow):
                        if 0 <= j * sw + q - pw < W:
                            cols[k, col + j] = x[n, c, row, j * sw + q - pw]
                        else:
                            cols[k, col + j] = 0


cdef void _col2im_image(const floating[:, ::1] cols, floating[:, :, :, ::1] grad_x, Py_ssize_t n,
                        int kh, int kw, int sh, int sw, int ph, int pw,
                        Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """The adjoint of _im2col_image: grad_x[n, c, i*sh+p-ph, j*sw+q-pw] += cols[k, n*P + i*OW + j]."""
    cdef Py_ssize_t C = grad_x.shape[1], H = grad_x.shape[2], W = grad_x.shape[3]
    cdef Py_ssize_t c, p, q, i, j, k, row, colx, base = n * oh * ow
    for c in range(C):
        for row in range(H):
            for colx in range(W):
                grad_x[n, c, row, colx] = 0
    for c in range(C):
        for p in range(kh):
            for q in range(kw):
                k = (c * kh + p) * kw + q
                for i in range(oh):
                    row = i * sh + p - ph
                    if row < 0 or row >= H:
                        continue
                    for j in range(ow):
                        colx = j * sw + q - pw
                        if 0 <= colx < W:
                            grad_x[n, c, row, colx] += cols[k, base + i * ow + j]


def _im2col(const floating[:, :, :, ::1] x, floating[:, ::1] cols, int kh, int kw,
            int sh, int sw, int ph, int pw, Py_ssize_t oh, Py_ssize_t ow):
    cdef Py_ssize_t n
    with nogil:
        for n in prange(x.shape[0], schedule="static", num_threads=_num_threads):
            _im2col_image(x, cols, n, kh, kw, sh, sw, ph, pw, oh, ow)


def _col2im(const floating[:, ::1] cols, floating[:, :, :, ::1] grad_x, int kh, int kw,
            int sh, int sw, int ph, int pw, Py_ssize_t oh, Py_ssize_t ow):
    cdef Py_ssize_t n
    with nogil:
        for n in prange(grad_x.shape[0], schedule="static", num_threads=_num_threads):
            _col2im_image(cols, grad_x, n, kh, kw, sh, sw, ph, pw, oh, ow)


def _fold_output(const floating[:, ::1] out, floating[:, :, ::1] y, bias):
    """y[n, f, p] = out[f, n*P + p] (+ bias[f]): from the GEMM's layout back to NCHW."""
    cdef Py_ssize_t N = y.shape[0], F = y.shape[1], P = y.shape[2], n, f, p
    cdef const floating[::1] b
    cdef bint has_bias = bias is not None
    cdef floating shift
    if has_bias:
        b = bias
    with nogil:
        for n in prange(N, schedule="static", num_threads=_num_threads):
            for f in range(F):
                shift = b[f] if has_bias else 0
                for p in range(P):
                    y[n, f, p] = out[f, n * P + p] + shift


def _unfold_output(const floating[:, :, ::1] grad_y, floating[:, ::1] g):
    """g[f, n*P + p] = grad_y[n, f, p]: the inverse of _fold_output."""
    cdef Py_ssize_t N = grad_y.shape[0], F = grad_y.shape[1], P = grad_y.shape[2], n, f, p
    with nogil:
        for n in prange(N, schedule="static", num_threads=_num_threads):
            for f in range(F):
                for p in range(P):
                    g[f, n * P + p] = grad_y[n, f, p]


def _geometry(x, weight, stride, padding):
    n, c, h, w = x.shape
    kh, kw = weight.shape[2], weight.shape[3]
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (w + 2 * padding[1] - kw) // stride[1] + 1
    return n, c * kh * kw, oh, ow


def _columns(x, weight, stride, padding):
    n, k, oh, ow = _geometry(x, weight, stride, padding)
    cols = np.empty((k, n * oh * ow), dtype=x.dtype)
    _im2col(x, cols, weight.shape[2], weight.shape[3], stride[0], stride[1],
            padding[0], padding[1], oh, ow)
    return cols


def conv2d_forward(x, weight, bias, stride, padding):
    """Compiled :func:`nnscratch.reference.conv2d_forward`: im2col, one GEMM, fold to NCHW."""
    n, k, oh, ow = _geometry(x, weight, stride, padding)
    f = weight.shape[0]
    out = weight.reshape(f, k) @ _columns(x, weight, stride, padding)
    y = np.empty((n, f, oh * ow), dtype=x.dtype)
    _fold_output(out, y, bias)
    return y.reshape(n, f, oh, ow)


def conv2d_backward(x, weight, grad_y, stride, padding, need_input_grad=True, need_weight_grad=True):
    """Compiled :func:`nnscratch.reference.conv2d_backward`.

    ``grad_W = G @ cols^T`` and ``grad_cols = W_mat^T @ G`` with ``G[f, n*P + p] = grad_y[n, f, p]``;
    col2im then sums every window's share back onto the input pixels.
    """
    n, k, oh, ow = _geometry(x, weight, stride, padding)
    f = weight.shape[0]
    g = np.empty((f, n * oh * ow), dtype=x.dtype)
    _unfold_output(grad_y.reshape(n, f, oh * ow), g)
    grad_weight = None
    if need_weight_grad:
        grad_weight = (g @ _columns(x, weight, stride, padding).T).reshape(weight.shape)
    if not need_input_grad:
        return None, grad_weight
    grad_cols = weight.reshape(f, k).T @ g
    grad_x = np.empty_like(x)
    _col2im(np.ascontiguousarray(grad_cols), grad_x, weight.shape[2], weight.shape[3],
            stride[0], stride[1], padding[0], padding[1], oh, ow)
    return grad_x, grad_weight


# ----------------------------------------------------------------------------- max pooling

def _maxpool_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y, long long[:, :, ::1] argmax,
                     int kh, int kw, int sh, int sw, int ph, int pw, Py_ssize_t ow):
    """Planes are (n, c) pairs flattened; x is (planes, H, W), y and argmax (planes, OH, OW)."""
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t oh = y.shape[1], s, i, j, p, q, row, col, best_at
    cdef floating best, v
    with nogil:
        for s in prange(planes, schedule="static", num_threads=_num_threads):
            for i in range(oh):
                for j in range(ow):
                    best_at = -1
                    best = 0
                    for p in range(kh):
                        row = i * sh + p - ph
                        if row < 0 or row >= H:
                            continue
                        for q in range(kw):
                            col = j * sw + q - pw
                            if col < 0 or col >= W:
                                continue
                            v = x[s, row, col]
                            # first maximum wins; a NaN wins over any number (NaN propagates)
                            if best_at < 0 or v > best or (v != v and best == best):
                                best = v
                                best_at = row * W + col
                    y[s, i, j] = best
                    argmax[s, i, j] = best_at


def _maxpool_backward(const floating[:, ::1] grad_y, const long long[:, ::1] argmax, floating[:, ::1] grad_x):
    """grad_x[s, argmax[s, o]] += grad_y[s, o]; planes s split across threads."""
    cdef Py_ssize_t planes = grad_x.shape[0], HW = grad_x.shape[1], O = grad_y.shape[1], s, o
    with nogil:
        for s in prange(planes, schedule="static", num_threads=_num_threads):
            for o in range(HW):
                grad_x[s, o] = 0
            for o in range(O):
                grad_x[s, argmax[s, o]] += grad_y[s, o]


def maxpool2d_forward(x, kernel, stride, padding):
    """Compiled :func:`nnscratch.reference.maxpool2d_forward` (same tie rule, same indices)."""
    n, c, h, w = x.shape
    oh = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    ow = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    y = np.empty((n * c, oh, ow), dtype=x.dtype)
    argmax = np.empty((n * c, oh, ow), dtype=np.int64)
    _maxpool_forward(x.reshape(n * c, h, w), y, argmax, kernel[0], kernel[1],
                     stride[0], stride[1], padding[0], padding[1], ow)
    return y.reshape(n, c, oh, ow), argmax.reshape(n, c, oh, ow)


def maxpool2d_backward(grad_y, argmax, input_shape):
    """Compiled :func:`nnscratch.reference.maxpool2d_backward`."""
    n, c, h, w = input_shape
    grad_x = np.empty((n * c, h * w), dtype=grad_y.dtype)
    _maxpool_backward(grad_y.reshape(n * c, -1), argmax.reshape(n * c, -1), grad_x)
    return grad_x.reshape(input_shape)


# ----------------------------------------------------------------------------- average pooling

def _avgpool_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                     int kh, int kw, int sh, int sw, int ph, int pw):
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t oh = y.shape[1], ow = y.shape[2], s, i, j, p, q, row, col
    cdef floating total, area = kh * kw
    with nogil:
        for s in prange(planes, schedule="static", num_threads=_num_threads):
            for i in range(oh):
                for j in range(ow):
                    total = 0
                    for p in range(kh):
                        row = i * sh + p - ph
                        if row < 0 or row >= H:
                            continue
                        for q in range(kw):
                            col = j * sw + q - pw
                            if 0 <= col < W:
                                total = total + x[s, row, col]
                    y[s, i, j] = total / area


def _avgpool_backward(const floating[:, :, ::1] grad_y, floating[:, :, ::1] grad_x,
                      int kh, int kw, int sh, int sw, int ph, int pw):
    cdef Py_ssize_t planes = grad_x.shape[0], H = grad_x.shape[1], W = grad_x.shape[2]
    cdef Py_ssize_t oh = grad_y.shape[1], ow = grad_y.shape[2], s, i, j, p, q, row, col
    cdef floating share, area = kh * kw
    with nogil:
        for s in prange(planes, schedule="static", num_threads=_num_threads):
            for row in range(H):
                for col in range(W):
                    grad_x[s, row, col] = 0
            for i in range(oh):
                for j in range(ow):
                    share = grad_y[s, i, j] / area
                    for p in range(kh):
                        row = i * sh + p - ph
                        if row < 0 or row >= H:
                            continue
                        for q in range(kw):
                            col = j * sw + q - pw
                            if 0 <= col < W:
                                grad_x[s, row, col] += share


def avgpool2d_forward(x, kernel, stride, padding):
    """Compiled :func:`nnscratch.reference.avgpool2d_forward` (padding counts in the mean)."""
    n, c, h, w = x.shape
    oh = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    ow = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    y = np.empty((n * c, oh, ow), dtype=x.dtype)
    _avgpool_forward(x.reshape(n * c, h, w), y, kernel[0], kernel[1], stride[0], stride[1],
                     padding[0], padding[1])
    return y.reshape(n, c, oh, ow)


def avgpool2d_backward(grad_y, input_shape, kernel, stride, padding):
    """Compiled :func:`nnscratch.reference.avgpool2d_backward`."""
    n, c, h, w = input_shape
    grad_x = np.empty((n * c, h, w), dtype=grad_y.dtype)
    _avgpool_backward(grad_y.reshape(n * c, grad_y.shape[2], grad_y.shape[3]), grad_x,
                      kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1])
    return grad_x.reshape(input_shape)
