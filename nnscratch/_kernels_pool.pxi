# Part of nnscratch/_kernels.pyx (textually included there, one extension module): the pooling kernels.
# The shared pieces (_threads_for, _gemm, _check_blas_sizes, the imports) are defined there.

# ----------------------------------------------------------------------------- pooling
#
# Pooling works plane by plane: an (n, c) pair is one H × W plane, and planes are independent.

cdef inline void _window_range(Py_ssize_t start, int k, Py_ssize_t size, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Offsets ``[lo, hi)`` of a length-``k`` window starting at ``start`` that fall inside ``[0, size)``."""
    lo[0] = -start if start < 0 else 0
    hi[0] = size - start if start + k > size else k


cdef inline bint _wins(floating challenger, floating best) noexcept nogil:
    """Whether ``challenger``, later in window order, replaces ``best``: it is larger, or the first NaN."""
    return (challenger > best) | ((challenger != challenger) & (best == best))


cdef void _maxpool_plane(const floating* x, floating* y, long long* argmax, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t oh, Py_ssize_t ow, int kh, int kw, int sh, int sw, int ph, int pw) noexcept nogil:
    """``y[i, j] = max`` over the window at ``(i*sh - ph, j*sw - pw)``; ``argmax`` its flat index ``row*W + col``.
    The first maximum in row-major window order wins; a NaN wins over any number (:func:`_wins`). The
    comparison is branch-free (selects, not jumps): on real data the winner is unpredictable."""
    cdef Py_ssize_t i, j, p, q, r0, c0, p_lo, p_hi, q_lo, q_hi, at, best_at, keep
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
                    keep = <Py_ssize_t> _wins(x[at], x[best_at]) - 1  # all ones to keep best_at, zero to take at
                    best_at = (best_at & keep) | (at & ~keep)
            y[i * ow + j] = x[best_at]
            argmax[i * ow + j] = best_at


cdef enum:
    POOL2X2_CHUNK = 64  # output columns per pass of the 2×2 kernel (its scratch lives on the stack)


cdef void _pair_winners(const floating* row, Py_ssize_t n, floating* value, int* right) noexcept nogil:
    """For ``j < n``: ``right[j]`` whether ``row[2j + 1]`` wins over ``row[2j]`` (:func:`_wins`), ``value[j]`` the winner."""
    cdef Py_ssize_t j
    cdef floating left_value, right_value
    cdef int r
    for j in range(n):
        left_value = row[2 * j]
        right_value = row[2 * j + 1]
        r = _wins(right_value, left_value)
        right[j] = r
        value[j] = right_value if r else left_value


cdef void _maxpool2x2_plane(const floating* x, floating* y, long long* argmax, Py_ssize_t W,
                            Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """:func:`_maxpool_plane` for the seed's pool (2×2 windows, stride 2, no padding) as a
    tournament: the left of each row pair against its right (:func:`_pair_winners`), then the
    bottom winner against the top one. A later pixel wins only by :func:`_wins`, so the winner is
    the same first maximum (or first NaN). Each pass is a loop of selects over contiguous scratch,
    which the compiler turns into vector instructions (one loop doing it all is not vectorized)."""
    cdef floating upper[POOL2X2_CHUNK]
    cdef floating lower[POOL2X2_CHUNK]
    cdef int right_top[POOL2X2_CHUNK]
    cdef int right_bottom[POOL2X2_CHUNK]
    cdef Py_ssize_t i, j, j0, n
    cdef floating top_value, bottom_value
    cdef int down, top_right, bottom_right
    cdef floating* y_row
    cdef long long* argmax_row
    for i in range(oh):
        j0 = 0
        while j0 < ow:
            n = min(<Py_ssize_t> POOL2X2_CHUNK, ow - j0)
            _pair_winners(x + 2 * i * W + 2 * j0, n, upper, right_top)
            _pair_winners(x + (2 * i + 1) * W + 2 * j0, n, lower, right_bottom)
            y_row = y + i * ow + j0
            argmax_row = argmax + i * ow + j0
            for j in range(n):
                top_value = upper[j]
                bottom_value = lower[j]
                top_right = right_top[j]
                bottom_right = right_bottom[j]
                down = _wins(bottom_value, top_value)
                y_row[j] = bottom_value if down else top_value
                # the column's flag chosen by arithmetic: a select on integers here stops the vectorizer
                argmax_row[j] = (2 * i + down) * W + 2 * (j0 + j) + top_right + down * (bottom_right - top_right)
            j0 += POOL2X2_CHUNK


cdef Py_ssize_t _maxpool_plane_backward(const floating* grad_y, const long long* argmax, floating* grad_x,
                                        Py_ssize_t hw, Py_ssize_t outputs) noexcept nogil:
    """``grad_x[argmax[o]] += grad_y[o]`` over one plane (``grad_x`` overwritten); returns how many
    indices fell outside the plane (skipped): the check costs nothing here, and a second pass over
    ``argmax`` would cost a third of the backward."""
    cdef Py_ssize_t o, outside = 0
    cdef long long at
    for o in range(hw):
        grad_x[o] = 0
    for o in range(outputs):
        at = argmax[o]
        if 0 <= at < hw:
            grad_x[at] += grad_y[o]
        else:
            outside += 1
    return outside


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
            if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
                _maxpool2x2_plane(&x[s, 0, 0], &y[s, 0, 0], &argmax[s, 0, 0], W, oh, ow)
            else:
                _maxpool_plane(&x[s, 0, 0], &y[s, 0, 0], &argmax[s, 0, 0], H, W, oh, ow, kh, kw, sh, sw, ph, pw)


def _maxpool_backward(const floating[:, ::1] grad_y, const long long[:, ::1] argmax, floating[:, ::1] grad_x):
    cdef Py_ssize_t planes = grad_x.shape[0], hw = grad_x.shape[1], outputs = grad_y.shape[1], s, outside = 0
    cdef int nt = _threads_for(planes, <double> planes * (hw + outputs))
    with nogil:
        for s in prange(planes, schedule="static", num_threads=nt):
            outside += _maxpool_plane_backward(&grad_y[s, 0], &argmax[s, 0], &grad_x[s, 0], hw, outputs)
    return outside


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
    """Compiled :func:`nnscratch.backends.reference.maxpool2d_forward` (same tie rule, same indices)."""
    n, c, oh, ow = _pool_output(x, kernel, stride, padding)
    y = np.empty((n * c, oh, ow), dtype=x.dtype)
    argmax = np.empty((n * c, oh, ow), dtype=np.int64)
    if y.size:
        _maxpool_forward(x.reshape(n * c, x.shape[2], x.shape[3]), y, argmax, kernel[0], kernel[1],
                         stride[0], stride[1], padding[0], padding[1])
    return y.reshape(n, c, oh, ow), argmax.reshape(n, c, oh, ow)


def maxpool2d_backward(grad_y, argmax, input_shape):
    """Compiled :func:`nnscratch.backends.reference.maxpool2d_backward`."""
    n, c, h, w = input_shape
    grad_x = np.empty((n * c, h * w), dtype=grad_y.dtype)  # each plane is zeroed, then scattered into
    if argmax.size and (grad_x.size == 0  # an empty plane, where every index is outside
                        or _maxpool_backward(grad_y.reshape(n * c, -1), argmax.reshape(n * c, -1), grad_x)):
        raise ValueError(argmax_outside_message(h, w))
    return grad_x.reshape(input_shape)


def avgpool2d_forward(x, kernel, stride, padding):
    """Compiled :func:`nnscratch.backends.reference.avgpool2d_forward` (padding counts in the mean)."""
    n, c, oh, ow = _pool_output(x, kernel, stride, padding)
    y = np.empty((n * c, oh, ow), dtype=x.dtype)
    if y.size:
        _avgpool_forward(x.reshape(n * c, x.shape[2], x.shape[3]), y, kernel[0], kernel[1],
                         stride[0], stride[1], padding[0], padding[1])
    return y.reshape(n, c, oh, ow)


def avgpool2d_backward(grad_y, input_shape, kernel, stride, padding):
    """Compiled :func:`nnscratch.backends.reference.avgpool2d_backward`."""
    n, c, h, w = input_shape
    grad_x = np.empty((n * c, h, w), dtype=grad_y.dtype)  # each plane is zeroed, then summed into
    if grad_x.size:
        _avgpool_backward(grad_y.reshape(n * c, grad_y.shape[2], grad_y.shape[3]), grad_x,
                          kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1])
    return grad_x.reshape(input_shape)
