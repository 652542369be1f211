# Part of nnscratch/_kernels.pyx (textually included there, one extension module): Winograd's transforms,
# used by _kernels_winograd.pxi (included after this file).
#
# ----------------------------------------------------------------------------- tile transforms
#
# The 1-D transforms are the matrices' rows written out, summed left to right as a dot product
# does, with the zeros skipped (x·0 and x + 0 are not free in IEEE arithmetic, so the compiler may
# not drop them; skipping them changes no value); the 2-D ones apply the 1-D ones to the columns,
# then to the rows of the result: B^T d B = (B^T (B^T d)^T)^T.

from nnscratch.backends.reference_winograd import kronecker


cdef inline void _bt_1d(const floating* d, Py_ssize_t s, floating* o, Py_ssize_t so, Py_ssize_t nb, int m) noexcept nogil:
    """``o[k + i·so] = Σ_j B^T[i, j] d[k + j·s]`` for k < nb: B^T applied to nb vectors at once (the
    innermost loop runs over k, one loop per tile size, so the compiler vectorizes it)."""
    cdef Py_ssize_t k
    cdef floating d0, d1, d2, d3, d4, d5, two = 2, four = 4, five = 5  # typed: a bare 4 makes Cython compute in double
    if m == 2:
        for k in range(nb):
            d0, d1, d2, d3 = d[k], d[k + s], d[k + 2 * s], d[k + 3 * s]
            o[k] = d0 - d2
            o[k + so] = d1 + d2
            o[k + 2 * so] = d2 - d1
            o[k + 3 * so] = d1 - d3
        return
    for k in range(nb):
        d0, d1, d2, d3, d4, d5 = d[k], d[k + s], d[k + 2 * s], d[k + 3 * s], d[k + 4 * s], d[k + 5 * s]
        o[k] = (four * d0 - five * d2) + d4
        o[k + so] = ((-(four * d1) - four * d2) + d3) + d4
        o[k + 2 * so] = ((four * d1 - four * d2) - d3) + d4
        o[k + 3 * so] = ((-(two * d1) - d2) + two * d3) + d4
        o[k + 4 * so] = ((two * d1 - d2) - two * d3) + d4
        o[k + 5 * so] = (four * d1 - five * d3) + d5


cdef inline void _at_1d(const floating* v, Py_ssize_t s, floating* o, Py_ssize_t so, Py_ssize_t nb, int m) noexcept nogil:
    """``o[k + i·so] = Σ_j A^T[i, j] v[k + j·s]`` for k < nb (α values in, m out)."""
    cdef Py_ssize_t k
    cdef floating v0, v1, v2, v3, v4, v5, two = 2, four = 4, eight = 8
    if m == 2:
        for k in range(nb):
            v0, v1, v2, v3 = v[k], v[k + s], v[k + 2 * s], v[k + 3 * s]
            o[k] = (v0 + v1) + v2
            o[k + so] = (v1 - v2) - v3
        return
    for k in range(nb):
        v0, v1, v2, v3, v4, v5 = v[k], v[k + s], v[k + 2 * s], v[k + 3 * s], v[k + 4 * s], v[k + 5 * s]
        o[k] = (((v0 + v1) + v2) + v3) + v4
        o[k + so] = ((v1 - v2) + two * v3) - two * v4
        o[k + 2 * so] = ((v1 + v2) + four * v3) + four * v4
        o[k + 3 * so] = (((v1 - v2) + eight * v3) - eight * v4) + v5


cdef inline void _a_1d(const floating* y, Py_ssize_t s, floating* o, Py_ssize_t so, Py_ssize_t nb, int m) noexcept nogil:
    """``o[k + i·so] = Σ_j A[i, j] y[k + j·s]`` for k < nb (the transpose of ``_at_1d``: m values in, α out)."""
    cdef Py_ssize_t k
    cdef floating y0, y1, y2, y3, two = 2, four = 4, eight = 8
    if m == 2:
        for k in range(nb):
            y0, y1 = y[k], y[k + s]
            o[k] = y0
            o[k + so] = y0 + y1
            o[k + 2 * so] = y0 - y1
            o[k + 3 * so] = -y1
        return
    for k in range(nb):
        y0, y1, y2, y3 = y[k], y[k + s], y[k + 2 * s], y[k + 3 * s]
        o[k] = y0
        o[k + so] = ((y0 + y1) + y2) + y3
        o[k + 2 * so] = ((y0 - y1) + y2) - y3
        o[k + 3 * so] = ((y0 + two * y1) + four * y2) + eight * y3
        o[k + 4 * so] = ((y0 - two * y1) + four * y2) - eight * y3
        o[k + 5 * so] = y3


cdef inline void _b_1d(const floating* v, Py_ssize_t s, floating* o, Py_ssize_t so, Py_ssize_t nb, int m) noexcept nogil:
    """``o[k + j·so] = Σ_i B^T[i, j] v[k + i·s]`` for k < nb: ``B`` (the transpose of ``_bt_1d``)."""
    cdef Py_ssize_t k
    cdef floating v0, v1, v2, v3, v4, v5, two = 2, four = 4, five = 5
    if m == 2:
        for k in range(nb):
            v0, v1, v2, v3 = v[k], v[k + s], v[k + 2 * s], v[k + 3 * s]
            o[k] = v0
            o[k + so] = (v1 - v2) + v3
            o[k + 2 * so] = (v1 - v0) + v2
            o[k + 3 * so] = -v3
        return
    for k in range(nb):
        v0, v1, v2, v3, v4, v5 = v[k], v[k + s], v[k + 2 * s], v[k + 3 * s], v[k + 4 * s], v[k + 5 * s]
        o[k] = four * v0
        o[k + so] = (((four * v2 - four * v1) - two * v3) + two * v4) + four * v5
        o[k + 2 * so] = (((-(five * v0) - four * v1) - four * v2) - v3) - v4
        o[k + 3 * so] = (((v1 - v2) + two * v3) - two * v4) - five * v5
        o[k + 4 * so] = (((v0 + v1) + v2) + v3) + v4
        o[k + 5 * so] = v5


# ----------------------------------------------------------------------------- filter transform
#
# ``transform_filters`` and ``filter_gradient`` are the compiled twins of reference_winograd's.
# Both work in double, as the reference does, on chunks of FILTER_CHUNK filters (an (f, c) pair is one
# 3×3 filter), one chunk per piece of work: each chunk is copied into a layout whose inner index is the
# filter, so that every formula below is a loop over contiguous filters, which the compiler vectorizes.
# Like the reference they multiply by the Kronecker product G ⊗ G (``kron``: row ab = a α + b, column
# pq = 3 p + q holds G[a, p] G[b, q]), adding the products in the order of its columns (rows) from
# 0, one rounding per step, as NumPy's einsum does: the same bits as the reference (tests/test_winograd.py).

cdef enum:
    FILTER_CHUNK = 64  # filters per piece of work (scratch on the stack: 9 × 64 doubles)


cdef void _transform_chunk(const floating* w, Py_ssize_t first, Py_ssize_t nb, const double* kron, int alpha2,
                           floating* u, Py_ssize_t filters) noexcept nogil:
    """``u[ab, first + k] = Σ_pq kron[ab, pq] w[first + k, pq]`` for k < nb (pq in order), rounded to ``floating``."""
    cdef double wt[9 * FILTER_CHUNK]
    cdef double total[FILTER_CHUNK]
    cdef Py_ssize_t k, pq, ab
    for k in range(nb):  # the chunk's filters, pixel-major
        for pq in range(9):
            wt[pq * FILTER_CHUNK + k] = w[(first + k) * 9 + pq]
    for ab in range(alpha2):
        for k in range(nb):
            total[k] = 0
        for pq in range(9):
            for k in range(nb):
                total[k] = total[k] + kron[ab * 9 + pq] * wt[pq * FILTER_CHUNK + k]
        for k in range(nb):
            u[ab * filters + first + k] = <floating> total[k]


cdef void _gradient_chunk(const floating* grad_u, Py_ssize_t first, Py_ssize_t nb, const double* kron, int alpha2,
                          floating* grad_w, Py_ssize_t filters) noexcept nogil:
    """``grad_w[first + k, pq] = Σ_ab kron[ab, pq] grad_u[ab, first + k]`` for k < nb (ab in order), the adjoint
    of :func:`_transform_chunk`, rounded to ``floating`` (``grad_u``'s rows already run over the filters)."""
    cdef double total[9 * FILTER_CHUNK]
    cdef Py_ssize_t k, ab, pq
    for pq in range(9):
        for k in range(nb):
            total[pq * FILTER_CHUNK + k] = 0
        for ab in range(alpha2):
            for k in range(nb):
                total[pq * FILTER_CHUNK + k] = (total[pq * FILTER_CHUNK + k]
                                                + kron[ab * 9 + pq] * <double> grad_u[ab * filters + first + k])
    for k in range(nb):
        for pq in range(9):
            grad_w[(first + k) * 9 + pq] = <floating> total[pq * FILTER_CHUNK + k]


def _filter_chunks(Py_ssize_t filters, Py_ssize_t values):
    """(chunks, threads) for ``filters`` filters and ``values`` numbers to compute."""
    chunks = (filters + FILTER_CHUNK - 1) // FILTER_CHUNK
    return chunks, _threads_for(chunks, <double> values)


def _transform_filters(const floating[:, ::1] w, const double[:, ::1] kron, floating[:, ::1] u):
    cdef Py_ssize_t filters = w.shape[0], chunks, c
    cdef int alpha2 = kron.shape[0], nt
    chunks, nt = _filter_chunks(filters, filters * alpha2 * 9)
    with nogil:
        for c in prange(chunks, schedule="static", num_threads=nt):
            _transform_chunk(&w[0, 0], c * FILTER_CHUNK, min(<Py_ssize_t> FILTER_CHUNK, filters - c * FILTER_CHUNK),
                             &kron[0, 0], alpha2, &u[0, 0], filters)


def _filter_gradient(const floating[:, ::1] grad_u, const double[:, ::1] kron, floating[:, ::1] grad_w):
    cdef Py_ssize_t filters = grad_w.shape[0], chunks, c
    cdef int alpha2 = kron.shape[0], nt
    chunks, nt = _filter_chunks(filters, filters * alpha2 * 9)
    with nogil:
        for c in prange(chunks, schedule="static", num_threads=nt):
            _gradient_chunk(&grad_u[0, 0], c * FILTER_CHUNK, min(<Py_ssize_t> FILTER_CHUNK, filters - c * FILTER_CHUNK),
                            &kron[0, 0], alpha2, &grad_w[0, 0], filters)


def transform_filters(weight, m):
    """Compiled :func:`nnscratch.backends.reference_winograd.transform_filters`: ``U = (G ⊗ G) w`` per filter,
    in double, returned in ``weight``'s dtype as (α², F, C)."""
    f, c = weight.shape[:2]
    u = np.empty(((m + 2) ** 2, f, c), dtype=weight.dtype)
    if u.size:
        _transform_filters(np.ascontiguousarray(weight).reshape(f * c, 9), kronecker(m), u.reshape((m + 2) ** 2, f * c))
    return u


def filter_gradient(grad_u, m):
    """Compiled :func:`nnscratch.backends.reference_winograd.filter_gradient`: ``∂L/∂w = (G ⊗ G)^T ∂L/∂U``
    per filter, in double, from ``grad_u`` (α², F, C), returned in its dtype as (F, C, 3, 3)."""
    alpha2, f, c = grad_u.shape
    grad_w = np.empty((f, c, 3, 3), dtype=grad_u.dtype)
    if grad_w.size:
        _filter_gradient(np.ascontiguousarray(grad_u).reshape(alpha2, f * c), kronecker(m), grad_w.reshape(f * c, 9))
    return grad_w
