# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 — Convolution and pooling, from the formula
#
# **Goals.** By the end of this notebook you can
# 1. compute the seed article's convolution (its section 3.3.1) by hand, and say why every
#    deep-learning library's "convolution" is really a cross-correlation;
# 2. write a convolution with channels, stride and padding as plain loops, and prove it equal to
#    nnscratch's NumPy reference and its compiled kernel, to the precision floating point allows;
# 3. see what hand-made edge filters and the two poolings of section 3.3.2 do to a real digit;
# 4. predict a layer's output size, even when the stride does not divide evenly;
# 5. compute one convolution three ways (loops, sliding windows + `einsum`, im2col + a matrix
#    product) and see why libraries choose the last one.
#
# **Runtime** on 2 cores (measured 2026-12-01, kernel start included): 7 s in full mode (most of
# it the plain loops of section 6), 3 s in quick mode (`NNSCRATCH_QUICK=1`, used by the tests: a
# smaller batch and fewer loop iterations in the timing section). A busy machine takes up to 3× longer.
#
# **Prerequisites.** NumPy arrays and slicing. No training happens here. The formulas are in
# [docs/formulas.md](../docs/formulas.md) §1–2, the article's sections in
# [docs/seed.md](../docs/seed.md); the code they point to is `nnscratch/reference.py`.

# %%
import nnscratch as nn
from nnscratch import notebook
session = notebook.start("01 — Convolution and pooling")   # prints backend, threads, mode; sets inline figure dpi
QUICK, OUT = session.quick, session.out                      # OUT: git-ignored runs/notebooks/<name>/ under the repo root

# %%
import time

import numpy as np
import scipy.signal

from nnscratch import ops, plot, reference
from nnscratch.gradient_check import relative_error

# %% [markdown]
# ## 1. The formula by hand
#
# Section 3.3.1 of the seed article defines the convolution of an input `x` with an `h × w`
# kernel `k` as
#
# $$ y(i,j) = \sum_{p=0}^{h-1} \sum_{q=0}^{w-1} x(i+p,\, j+q)\cdot k(p,q) $$
#
# Put the kernel on top of the input with its corner at `(i, j)`, multiply the numbers that
# overlap, add them up: that is output `y(i, j)`. Then slide. With a 3×3 input and a 2×2 kernel
# the kernel fits in 2 positions down and 2 across, so `y` is 2×2. Four loops: two over the
# output position `(i, j)`, two over the kernel offset `(p, q)`.

# %%
x = np.array([[1, 2, 3],
              [4, 5, 6],
              [7, 8, 9]], dtype=np.float64)
k = np.array([[1, 2],
              [3, 4]], dtype=np.float64)

h, w = k.shape
y_hand = np.zeros((x.shape[0] - h + 1, x.shape[1] - w + 1))
for i in range(y_hand.shape[0]):
    for j in range(y_hand.shape[1]):
        terms = []
        for p in range(h):
            for q in range(w):
                y_hand[i, j] += x[i + p, j + q] * k[p, q]
                terms.append(f"{x[i + p, j + q]:g}·{k[p, q]:g}")
        print(f"y({i},{j}) = " + " + ".join(terms) + f" = {y_hand[i, j]:g}")
print(y_hand)

# %% [markdown]
# The same numbers from the library, twice: a `Conv2d` layer whose weight we set by hand (one
# input channel, one output channel, no bias), and the NumPy reference function the layer's
# formula is defined by. Layers work on batches shaped `(N, C, H, W)`: `N` images of `C` channels,
# so the 3×3 input becomes `x[None, None]`, of shape `(1, 1, 3, 3)`, and the kernel a weight of
# shape `(out_channels, in_channels, 2, 2)`.

# %%
conv = nn.Conv2d(1, 1, kernel_size=2, bias=False, dtype=np.float64)
conv.weight.data[0, 0] = k
y_layer = conv(x[None, None])
y_reference = reference.conv2d_forward(x[None, None], k[None, None], None, stride=(1, 1), padding=(0, 0))
print("Conv2d:\n", y_layer[0, 0])
print("reference.conv2d_forward:\n", y_reference[0, 0])
print("expected: identical to the hand computation (small integers are exact in floating point)")
assert y_layer.shape == (1, 1, 2, 2)
assert np.array_equal(y_layer[0, 0], y_hand) and np.array_equal(y_reference[0, 0], y_hand)

# %% [markdown]
# ### Why this is a cross-correlation
#
# In mathematics (signal processing, probability) the convolution of `x` with `k` **flips the
# kernel**: `(x ∗ k)(i, j) = Σ_p Σ_q x(i − p, j − q)·k(p, q)`. The input is read backwards
# relative to the kernel. The seed's formula reads both forwards, `x(i + p, j + q)·k(p, q)`: that
# is a **cross-correlation**. Every deep-learning library (PyTorch's `conv2d`, Keras's `Conv2D`,
# nnscratch's `Conv2d`) computes the cross-correlation and calls it convolution. Nothing is lost:
# the kernel is *learned*, so a network that needed a flipped kernel simply learns the flipped
# numbers. The flip matters only when you use a kernel someone designed for true convolution.
#
# The two differ exactly by the flip: **true convolution with `k` = cross-correlation with `k`
# turned by 180°** (`k[::-1, ::-1]`). SciPy has both, so we can check against an implementation
# that is not ours.

# %%
k_flipped = k[::-1, ::-1]
true_convolution = scipy.signal.convolve2d(x, k, mode="valid")
scipy_correlation = scipy.signal.correlate2d(x, k, mode="valid")
ours_with_flipped_kernel = reference.conv2d_forward(x[None, None], k_flipped[None, None].copy(), None, (1, 1), (0, 0))[0, 0]
print("scipy correlate2d(x, k):         ", scipy_correlation.ravel(), " (ours:", y_hand.ravel(), ")")
print("scipy convolve2d(x, k):          ", true_convolution.ravel())
print("ours with the kernel flipped:    ", ours_with_flipped_kernel.ravel())
print("true convolution != cross-correlation here:", not np.array_equal(true_convolution, y_hand))
assert np.array_equal(scipy_correlation, y_hand), "the seed's formula is scipy's correlate2d"
assert np.array_equal(true_convolution, ours_with_flipped_kernel), "convolution = correlation with the flipped kernel"
assert not np.array_equal(true_convolution, y_hand), "for this (non-symmetric) kernel the flip changes the result"

# %% [markdown]
# ## 2. A plain-loop `conv2d` with channels, stride and padding
#
# A real layer adds three things to the seed's formula ([formulas.md](../docs/formulas.md) §1):
#
# * **channels**: the input has `C` channels and the layer `F` filters; filter `f` has one kernel
#   per input channel, and the sum runs over channels too. The weight is `w[f, c, p, q]`, shape `(F, C, KH, KW)`;
# * **stride** `S`: the window moves by `S` pixels, so output `(i, j)` starts at input `(i·S, j·S)`;
# * **padding** `P`: `P` rows and columns of zeros are added on every side first.
#
# $$ y[n,f,i,j] = b[f] + \sum_c \sum_p \sum_q x_{pad}[n,\,c,\,iS + p,\,jS + q]\; w[f,c,p,q] $$
#
# Seven loops, one per index, and nothing clever. This is the function every faster version
# below has to agree with.

# %%
def conv2d_loops(x, weight, bias=None, stride=1, padding=0):
    """y[n,f,i,j] = b[f] + Σ_c Σ_p Σ_q x_pad[n, c, i·S + p, j·S + q] · w[f, c, p, q], one loop per index."""
    N, C, H, W = x.shape
    F, _, KH, KW = weight.shape
    S, P = stride, padding
    OH, OW = (H + 2 * P - KH) // S + 1, (W + 2 * P - KW) // S + 1
    x_pad = np.zeros((N, C, H + 2 * P, W + 2 * P), dtype=x.dtype)
    x_pad[:, :, P:P + H, P:P + W] = x
    y = np.zeros((N, F, OH, OW), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(OH):
                for j in range(OW):
                    total = 0.0 if bias is None else bias[f]
                    for c in range(C):
                        for p in range(KH):
                            for q in range(KW):
                                total += x_pad[n, c, i * S + p, j * S + q] * weight[f, c, p, q]
                    y[n, f, i, j] = total
    return y


# %% [markdown]
# Now match it against the library, CS231n-style: compute a **relative error**
# `max|a − b| / (max|a| + max|b|)` (`nnscratch.gradient_check.relative_error`) and compare it with
# what rounding alone produces. A sum of a few dozen products rounded to float64 (53-bit mantissa,
# machine epsilon 2.2e-16) is off by about 1e-16 to 1e-15; in float32 (epsilon 1.2e-7) by about
# 1e-8 to 1e-7. A bug (a wrong index, a missing channel) gives errors near 1e-1 to 1.
#
# Three implementations take part: the loops above (in float64: our "truth"), the NumPy reference
# `reference.conv2d_forward` (sliding windows + `einsum`, section 6 below) and the compiled Cython
# kernel, reached through `ops.conv2d` with the `cython` backend active. Several shapes, including
# a stride that does not divide the input and a non-square kernel.

# %%
rng = np.random.default_rng(0)
cases = [  # (N, C, H, W, F, KH, KW, stride, padding)
    (2, 3, 7, 7, 4, 3, 3, 1, 0),
    (2, 3, 7, 7, 4, 3, 3, 2, 1),
    (1, 2, 9, 8, 3, 2, 3, 3, 2),
    (3, 1, 6, 6, 2, 5, 5, 1, 2),
]
print(f"{'x shape':>14} {'weight':>14} S P | loops vs reference   loops vs cython (f64)   loops vs cython (f32)")
for N, C, H, W, F, KH, KW, S, P in cases:
    x64 = rng.standard_normal((N, C, H, W))
    w64 = rng.standard_normal((F, C, KH, KW))
    b64 = rng.standard_normal(F)
    truth = conv2d_loops(x64, w64, b64, stride=S, padding=P)
    from_reference = reference.conv2d_forward(x64, w64, b64, (S, S), (P, P))
    with nn.use_backend("cython"):
        compiled64 = ops.conv2d(x64, w64, b64, stride=S, padding=P)
        compiled32 = ops.conv2d(x64.astype(np.float32), w64.astype(np.float32), b64.astype(np.float32),
                                stride=S, padding=P)
    errors = [relative_error(truth, other) for other in (from_reference, compiled64, compiled32)]
    print(f"{str(x64.shape):>14} {str(w64.shape):>14} {S} {P} | {errors[0]:18.1e} {errors[1]:23.1e} {errors[2]:23.1e}")
    assert truth.shape == from_reference.shape == compiled64.shape == compiled32.shape
    assert errors[0] < 1e-13 and errors[1] < 1e-13, "float64 implementations must agree to rounding (~1e-16)"
    assert errors[2] < 1e-5, "float32 must agree to float32 rounding (~1e-8 to 1e-7)"
print("expected: ~1e-16 to 1e-15 in float64, ~1e-8 to 1e-7 in float32")

# %% [markdown]
# ## 3. Hand-made edge filters on a real digit
#
# Before any training, a convolution is just a filter, and some filters have names. The **Sobel**
# filters estimate the image gradient: Sobel-x subtracts the column on the left from the column on
# the right, so it lights up on *vertical* edges (the intensity changes along x); Sobel-y does the
# same between rows and lights up on *horizontal* edges. The **Laplacian** responds wherever the
# intensity curves (thin lines, corners) and the **blur** averages a 3×3 neighbourhood. The first
# three sum to 0, so on a flat background they answer exactly 0.
#
# We load a test digit, normalise it as the seed does (`(x/255 − 0.5)/0.5`, values in [−1, 1],
# `prepare_images`), and put the four kernels into one `Conv2d(1, 4, 3)`, without padding like
# the seed's `conv1`, so the maps are 26×26. (With `padding=1` the zeros added around the image
# would not look like background, which is −1 after normalisation: every filter would see a
# false edge all around the frame.)

# %%
(train_images, train_labels), (test_images, test_labels) = nn.data.load_mnist()
digit_index = 0
digits = nn.data.prepare_images(test_images[digit_index:digit_index + 1])  # (1, 1, 28, 28), float32 in [-1, 1]
print("digit", test_labels[digit_index], "shape", digits.shape, "range", digits.min(), digits.max())

hand_filters = {
    "Sobel x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],     # vertical edges
    "Sobel y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],     # horizontal edges
    "Laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],     # lines, corners
    "blur": np.full((3, 3), 1 / 9),                       # 3×3 mean
}
edges = nn.Conv2d(1, len(hand_filters), kernel_size=3, bias=False)
edges.weight.data[:, 0] = np.array(list(hand_filters.values()), dtype=np.float32)
print(edges, "weight", edges.weight.data.shape)
plot.images(edges.weight.data[:, 0], titles=list(hand_filters), symmetric=True,
            suptitle="four hand-made 3×3 kernels (one Conv2d's weights; the blur's 1/9 is faint on this scale)")

# %%
maps = edges(digits)[0]  # (4, 26, 26)
plot.images([digits[0, 0], *maps], titles=["input digit", *hand_filters], ncols=5,
            suptitle="the digit and its four feature maps (each its own grey scale; edge maps: grey ≈ 0)")

# %% [markdown]
# Read the maps: Sobel-x is bright where a stroke begins going right (dark → bright) and dark
# where it ends; on the horizontal bar of the 7 it is nearly silent. Sobel-y is the opposite:
# strong on the top bar, weak on the steep stem. Two checks: the layer agrees with SciPy's
# cross-correlation of the digit, and the three zero-sum filters give exactly 0 wherever the
# 3×3 window is all background.

# %%
digit64 = digits[0, 0].astype(np.float64)
scipy_maps = np.stack([scipy.signal.correlate2d(digit64, np.asarray(kern, dtype=np.float64), mode="valid")
                       for kern in hand_filters.values()])
error = relative_error(maps, scipy_maps)
print(f"Conv2d (float32) vs scipy correlate2d (float64): relative error {error:.1e}  (expect ~1e-8 to 1e-7)")
assert error < 1e-5

background = scipy.signal.correlate2d(digit64, np.ones((3, 3)), mode="valid") == -9  # window all -1
largest = np.abs(maps[:3][:, background]).max()
print(f"{background.sum()} all-background windows; largest |response| of the zero-sum filters there: {largest}"
      "  (expect exactly 0)")
assert largest == 0

# %% [markdown]
# ## 4. Output sizes, and strides that do not divide
#
# Along one axis, a window of size `K` moving by `S` over `H + 2P` padded pixels fits
#
# $$ \text{out} = \left\lfloor \frac{H + 2P - K}{S} \right\rfloor + 1 $$
#
# times: the first window sits at 0, each further one `S` pixels on, and the last must still fit.
# When `S` does not divide `H + 2P − K` the division is rounded **down**: the last
# `(H + 2P − K) mod S` pixels are never read. No error, no warning, they are just ignored.
#
# The table below computes the formula and asks a real layer for its output shape.

# %%
def layer_output_height(H, K, S, P):
    """Height of what a Conv2d actually returns on an H×H input."""
    layer = nn.Conv2d(1, 1, kernel_size=K, stride=S, padding=P, bias=False)
    return layer(np.zeros((1, 1, H, H), dtype=np.float32)).shape[2]


size_cases = [  # (H, K, S, P): the seed Net's layers first, then strides that do not divide
    (28, 3, 1, 0), (26, 3, 1, 0), (24, 2, 2, 0), (28, 3, 1, 1), (28, 5, 1, 2), (28, 5, 2, 2),
    (28, 3, 2, 0), (28, 3, 2, 1), (26, 3, 3, 0), (28, 4, 3, 1), (28, 7, 4, 0), (7, 3, 2, 0), (5, 5, 1, 0),
]
print(f"{'H':>3} {'K':>2} {'S':>2} {'P':>2} | {'(H+2P-K)/S':>10} {'formula':>7} {'layer':>5} | pixels never read")
for H, K, S, P in size_cases:
    formula = (H + 2 * P - K) // S + 1
    actual = layer_output_height(H, K, S, P)
    unread = (H + 2 * P - K) % S
    note = "none (divides evenly)" if unread == 0 else f"last {unread} of the padded rows"
    print(f"{H:3d} {K:2d} {S:2d} {P:2d} | {(H + 2 * P - K) / S:10.2f} {formula:7d} {actual:5d} | {note}")
    assert actual == formula == reference.output_size(H, K, S, P), (H, K, S, P)
print("expected: the formula and the layer agree on every row")

# %% [markdown]
# Proof that the unread pixels really are ignored: with `H = 28, K = 3, S = 2, P = 0` the windows
# start at rows 0, 2, …, 24 and end at row 26, so row 27 and column 27 never enter any window.
# Changing them changes nothing.

# %%
strided = nn.Conv2d(1, 1, kernel_size=3, stride=2, bias=False)
changed = digits.copy()
changed[..., 27, :] = 100.0
changed[..., :, 27] = 100.0
difference = np.abs(strided(changed) - strided(digits)).max()
print(f"output shape {strided(digits).shape}; largest change after rewriting row and column 27: {difference} (expect 0)")
assert difference == 0

# %% [markdown]
# ## 5. Max vs average pooling
#
# Section 3.3.2 of the seed defines the two poolings over an `h × w` window:
#
# $$ y(i,j) = \max_{p=0}^{h-1}\max_{q=0}^{w-1} x(i+p,\, j+q) \qquad
#    y(i,j) = \frac{1}{h\,w}\sum_{p=0}^{h-1}\sum_{q=0}^{w-1} x(i+p,\, j+q) $$
#
# As written the window moves one pixel at a time. The seed's own Net (`max_pool2d(x, 2)`, its
# section 4.2) and every library move it by its size: `x(i·h + p, j·w + q)`, the stride equals
# the window, so a 2×2 pooling halves each side ([docs/seed.md](../docs/seed.md)).
# `MaxPool2d(k)` and `AvgPool2d(k)` do that (pass `stride=` for anything else).
#
# Max pooling keeps the strongest response of each window: a stroke survives at full brightness,
# a little thicker. Average pooling keeps the mean: thin strokes fade towards the background and
# edges blur. The figure puts all five on one colour scale (red +1 = ink, blue −1 = background).

# %%
pooled = {}
for size in (2, 4):
    pooled[f"max {size}×{size}"] = nn.MaxPool2d(size)(digits)[0, 0]
    pooled[f"average {size}×{size}"] = nn.AvgPool2d(size)(digits)[0, 0]
for name, image in pooled.items():
    print(f"{name:>12}: {image.shape}, brightest {image.max():.2f}")
plot.images([digits[0, 0], *pooled.values()], titles=["input 28×28", *(f"{n} → {v.shape[0]}×{v.shape[1]}"
            for n, v in pooled.items())], ncols=5, symmetric=True,
            suptitle="max pooling keeps the strokes, average pooling fades them (one shared scale)")

# %% [markdown]
# ### What the backward pass does
#
# Pooling has no weights, but gradients must flow through it ([formulas.md](../docs/formulas.md)
# §2). Inside a window, max pooling is just `y = x_winner`: the output's gradient goes **entirely
# to the pixel that won** (its argmax) and the other pixels get 0. Average pooling is
# `y = (x_1 + … + x_K)/K`: every pixel of the window gets `1/K` of the gradient. A tiny example,
# sending a gradient of 1 back from every output:

# %%
tiny = np.array([[1, 5, 2, 0],
                 [3, 4, 8, 1],
                 [0, 2, 1, 1],
                 [6, 1, 3, 7]], dtype=np.float64)[None, None]
max_pool, avg_pool = nn.MaxPool2d(2), nn.AvgPool2d(2)
print("input:\n", tiny[0, 0])
print("max pool forward:\n", max_pool(tiny)[0, 0])
grad_max = max_pool.backward(np.ones((1, 1, 2, 2)))
print("max pool backward of ones (1 at each window's winner):\n", grad_max[0, 0])
print("average pool forward:\n", avg_pool(tiny)[0, 0])
grad_avg = avg_pool.backward(np.ones((1, 1, 2, 2)))
print("average pool backward of ones (1/4 everywhere):\n", grad_avg[0, 0])

winners = np.zeros((4, 4))
winners[[0, 1, 3, 3], [1, 2, 0, 3]] = 1  # the 5, the 8, the 6 and the 7
assert np.array_equal(grad_max[0, 0], winners), "max pooling routes the gradient to the argmax only"
assert np.array_equal(grad_avg[0, 0], np.full((4, 4), 0.25)), "average pooling spreads it evenly"

# %% [markdown]
# When windows **overlap** (stride smaller than the window, as in the seed's formula read
# literally), one pixel can win several windows, and it receives the **sum** of their gradients.
# Below, a 3×3 max pooling with stride 1 on a 4×4 input gives 2×2 outputs; the 9 in the middle
# wins all four windows and collects a gradient of 4.

# %%
peak = np.array([[1, 2, 1, 0],
                 [2, 9, 3, 1],
                 [1, 3, 2, 1],
                 [0, 1, 1, 2]], dtype=np.float64)[None, None]
overlapping = nn.MaxPool2d(3, stride=1)
print("forward:\n", overlapping(peak)[0, 0])
grad_overlap = overlapping.backward(np.ones((1, 1, 2, 2)))
print("backward of ones:\n", grad_overlap[0, 0])
print(f"gradient at the peak: {grad_overlap[0, 0, 1, 1]:g} (expect 4, one per window it wins); total {grad_overlap.sum():g} (expect 4)")
assert grad_overlap[0, 0, 1, 1] == 4 and grad_overlap.sum() == 4

# %% [markdown]
# ## 6. Three ways to compute the same convolution
#
# The seed's Net spends most of its time in `conv2`: 32 input channels → 64 filters of 3×3, on
# 26×26 maps (24×24 out). We compute that layer three ways, plus the compiled kernel:
#
# 1. **plain loops** (`conv2d_loops` above): one Python multiply-add per term;
# 2. **sliding windows + `einsum`**, the NumPy reference: `sliding_window_view` gives every 3×3
#    window of every channel as a view `windows[n, c, i, j, p, q]` (no copy), and one `einsum`
#    contracts `(c, p, q)` against the weight;
# 3. **im2col + a matrix product**, what the compiled kernels do: copy every window into a column
#    of a matrix `cols` of shape `(C·KH·KW, OH·OW)` per image, then `y = W_mat @ cols` with
#    `W_mat = w.reshape(F, C·KH·KW)`. The copy costs memory (each pixel is copied `KH·KW` = 9
#    times) but turns the convolution into one large matrix product, the operation BLAS libraries
#    run closest to the processor's peak.

# %%
from numpy.lib.stride_tricks import sliding_window_view


def conv2d_windows(x, weight, stride=1):
    """Sliding windows + einsum (no padding): y[n,f,i,j] = Σ_{c,p,q} windows[n,c,i,j,p,q] · w[f,c,p,q]."""
    windows = sliding_window_view(x, weight.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwpq,fcpq->nfhw", windows, weight, optimize=True)


def im2col(x, kh, kw, stride=1):
    """cols[n, (c, p, q), (i, j)] = x[n, c, i·S + p, j·S + q] (no padding), shape (N, C·kh·kw, OH·OW)."""
    N, C, H, W = x.shape
    OH, OW = (H - kh) // stride + 1, (W - kw) // stride + 1
    cols = np.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)
    for p in range(kh):
        for q in range(kw):  # one copy per kernel offset: every window's (p, q) pixel at once
            cols[:, :, p, q] = x[:, :, p:p + stride * (OH - 1) + 1:stride, q:q + stride * (OW - 1) + 1:stride]
    return cols.reshape(N, C * kh * kw, OH * OW), (OH, OW)


def conv2d_im2col(x, weight, stride=1):
    """im2col, then one matrix product (F, C·kh·kw) @ (C·kh·kw, OH·OW) per image."""
    F, C, kh, kw = weight.shape
    cols, (OH, OW) = im2col(x, kh, kw, stride)
    return (weight.reshape(F, C * kh * kw) @ cols).reshape(x.shape[0], F, OH, OW)


# %% [markdown]
# The loops are far too slow for the whole batch (about 10 million multiply-adds per image, each
# a Python operation), so they run on **one image** (and in quick mode only 2 of the 64 filters),
# and their time is scaled up to the full batch. The scaled figure is an estimate, and says so. The others run on
# the whole batch: 8 images in quick mode, 64 (the seed's batch size) in full mode. Each time is
# the best of a few runs measured with `time.perf_counter`; timings on a shared machine vary and
# are printed, never asserted. Correctness *is* asserted: all four must agree.
#
# To compare algorithms rather than thread schedulers, NumPy's matrix products run on one thread
# here (`threadpoolctl.threadpool_limits`), and the compiled kernel is timed on one thread too,
# then on all of nnscratch's threads. (On a machine busy with other work a multi-threaded BLAS
# can be slowed a hundredfold on matrices this small, its threads waiting for each other.)

# %%
from threadpoolctl import threadpool_limits

batch = 8 if QUICK else 64
loop_filters = 2 if QUICK else 64  # the loops compute 1 image × loop_filters filters
nn.manual_seed(0)
conv2 = nn.models.seed_net().conv2  # the seed Net's conv2 layer, initialised: Conv2d(32, 64, kernel_size=(3, 3))
weight = conv2.weight.data          # (64, 32, 3, 3) float32
x_batch = np.random.default_rng(1).standard_normal((batch, 32, 26, 26)).astype(np.float32)
flops = 2 * batch * 64 * 24 * 24 * 32 * 3 * 3
print(f"conv2: weight {weight.shape}, input {x_batch.shape}, output {(batch, 64, 24, 24)}, "
      f"{flops / 1e9:.2f} GFLOP per batch")


def best_time(function, repeats=3):
    """Smallest wall time of `repeats` calls, in seconds, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


threads = nn.get_num_threads()
seconds_loops, y_loops = best_time(lambda: conv2d_loops(x_batch[:1], weight[:loop_filters]), repeats=1)
seconds_loops_scaled = seconds_loops * batch * (64 / loop_filters)
with threadpool_limits(limits=1, user_api="blas"):
    seconds_windows, y_windows = best_time(lambda: conv2d_windows(x_batch, weight))
    seconds_im2col, y_im2col = best_time(lambda: conv2d_im2col(x_batch, weight))
with nn.use_backend("cython"):
    nn.set_num_threads(1)
    seconds_compiled_1, _ = best_time(lambda: ops.conv2d(x_batch, weight))
    nn.set_num_threads(threads)
    seconds_compiled, y_compiled = best_time(lambda: ops.conv2d(x_batch, weight))

rows = [
    (f"plain loops (1 image × {loop_filters} filters, scaled ×{batch * 64 // loop_filters})", seconds_loops_scaled),
    ("sliding windows + einsum (the reference), 1 thread", seconds_windows),
    ("im2col + matrix product (written above), 1 thread", seconds_im2col),
    ("compiled kernel (im2col + sgemm), 1 thread", seconds_compiled_1),
    (f"compiled kernel, {threads} threads", seconds_compiled),
]
print(f"batch of {batch}:")
for name, seconds in rows:
    print(f"  {name:<55} {seconds * 1e3:10.1f} ms   {flops / seconds / 1e9:7.2f} GFLOP/s"
          f"   {seconds / seconds_compiled_1:8.1f}× the compiled time on 1 thread")

# %%
truth = conv2d_windows(x_batch.astype(np.float64), weight.astype(np.float64))  # the same formula in float64
checks = {
    f"plain loops (1 image × {loop_filters} filters)": relative_error(y_loops, truth[:1, :loop_filters]),
    "sliding windows + einsum": relative_error(y_windows, truth),
    "im2col + matrix product": relative_error(y_im2col, truth),
    "compiled kernel": relative_error(y_compiled, truth),
}
print("each float32 result against the sliding-window formula computed in float64:")
for name, error in checks.items():
    print(f"  {name:<40} relative error {error:.1e}")
print("expected: ~1e-7 (float32 sums of 288 products); a bug would give ~1e-1 or more")
assert y_windows.shape == y_im2col.shape == y_compiled.shape == (batch, 64, 24, 24)
assert all(error < 1e-5 for error in checks.values())

# %% [markdown]
# The loops lose by three to four orders of magnitude: every multiply-add goes through the Python
# interpreter. The other three do the same arithmetic in compiled code and land close together,
# for one reason: they are all im2col + a matrix product. `einsum(..., optimize=True)` hands the
# contraction to `np.tensordot`, which copies the strided windows into a matrix (im2col, done for
# you) and calls BLAS; our `conv2d_im2col` does it in the open; the compiled kernel does it one
# image at a time, so the columns stay in the processor's cache, and spreads the images over the
# cores (docs/performance.md measured two threads 1.5× faster than one on an idle machine; when other
# programs share the cores, as on the machine that ran this copy, they may gain little). A BLAS matrix product is tuned for exactly this work, so it is the shape every fast
# convolution takes. See [docs/performance.md](../docs/performance.md) for how the kernels
# compare with PyTorch.

# %% [markdown]
# ## Exercises
#
# Each exercise has a check function that tells you *what* is wrong, and a worked solution so
# that the notebook runs top to bottom. To try one yourself, replace the body of the solution and
# run the check. Each check is shown catching a typical mistake first, so you know it can fail.

# %%
def expect_failure(check, wrong_answer):
    """Run `check` on a deliberately wrong answer and print the message it gives."""
    try:
        check(wrong_answer)
    except AssertionError as problem:
        print("the check caught a wrong answer:", problem)
    else:
        raise AssertionError(f"{check.__name__} accepted a wrong answer: the check is too weak")


# %% [markdown]
# ### Exercise 1: the output size
#
# Write `output_size(H, K, S, P)`: the number of positions a window of size `K` takes with
# stride `S` along an axis of `H` pixels padded by `P` on each side. It must return an `int`.

# %%
def check_output_size(output_size):
    cases = [(28, 3, 1, 0, 26), (28, 3, 1, 1, 28), (24, 2, 2, 0, 12), (28, 3, 2, 0, 13), (26, 3, 3, 0, 8),
             (28, 4, 3, 1, 9), (7, 3, 2, 0, 3), (5, 5, 1, 0, 1), (28, 5, 2, 2, 14)]
    for H, K, S, P, expected in cases:
        got = output_size(H, K, S, P)
        call = f"output_size(H={H}, K={K}, S={S}, P={P}) returned {got!r}, expected {expected}"
        assert isinstance(got, (int, np.integer)), f"{call}: return an int (use floor division //, not /)"
        if got == expected:
            continue
        if P and got == (H - K) // S + 1:
            raise AssertionError(f"{call}: the padding was left out; it adds P pixels on *each* side, 2P in all")
        if P and got == (H + P - K) // S + 1:
            raise AssertionError(f"{call}: the padding counts on both sides: H + 2P, not H + P")
        if got == expected - 1:
            raise AssertionError(f"{call}: off by one; the first window sits at position 0, count it (+ 1)")
        if got == -(-(H + 2 * P - K) // S) + 1:
            raise AssertionError(f"{call}: rounded up; a window that would run past the edge does not exist, round down")
        raise AssertionError(call)
    print(f"output_size: all {len(cases)} cases right")


expect_failure(check_output_size, lambda H, K, S, P: (H - K) // S + 1)


# %%
def output_size(H, K, S, P):  # worked solution
    return (H + 2 * P - K) // S + 1


check_output_size(output_size)


# %% [markdown]
# ### Exercise 2: max pooling with loops
#
# Write `max_pool2d_loops(x, kernel, stride)` for an `(N, C, H, W)` array, without padding, with
# plain loops: `y[n, c, i, j]` is the largest `x[n, c, i·S + p, j·S + q]` over `0 ≤ p, q < kernel`.
# The check compares it with `nn.MaxPool2d` on inputs with negative values, windows that overlap
# and strides that do not divide.

# %%
def check_max_pool2d(max_pool2d_loops):
    rng = np.random.default_rng(2)
    for kernel, stride, shape in [(2, 2, (2, 3, 6, 6)), (3, 2, (1, 2, 7, 8)), (3, 1, (1, 1, 5, 5)), (2, 3, (2, 1, 9, 7))]:
        x = rng.standard_normal(shape)
        x[0, 0] = -np.abs(x[0, 0]) - 1  # one plane entirely negative
        expected = nn.MaxPool2d(kernel, stride=stride)(x)
        where = f"max_pool2d_loops(x of shape {shape}, kernel={kernel}, stride={stride})"
        got = np.asarray(max_pool2d_loops(x, kernel, stride))
        assert got.shape == expected.shape, (
            f"{where} has shape {got.shape}, expected {expected.shape}: each side is (H - kernel) // stride + 1")
        if np.allclose(got, nn.AvgPool2d(kernel, stride=stride)(x)):
            raise AssertionError(f"{where} returned the windows' means: max pooling keeps the largest value")
        if np.any(got[0, 0] == 0) and not np.any(expected[0, 0] == 0):
            raise AssertionError(f"{where}: a window of negative numbers gave 0; start the running maximum at "
                                 "-inf (or at the window's first pixel), not at 0")
        wrong = np.argwhere(~np.isclose(got, expected))
        if len(wrong):
            n, c, i, j = wrong[0]
            window = x[n, c, i * stride:i * stride + kernel, j * stride:j * stride + kernel]
            raise AssertionError(f"{where}: y[{n}, {c}, {i}, {j}] is {got[n, c, i, j]:.4f}, expected "
                                 f"{expected[n, c, i, j]:.4f}, the largest of the window rows {i * stride}.."
                                 f"{i * stride + kernel - 1}, columns {j * stride}..{j * stride + kernel - 1}:\n{window}")
    print("max_pool2d_loops: agrees with nn.MaxPool2d on all 4 cases")


def max_pool_starting_at_zero(x, kernel, stride):  # a typical mistake, for the demonstration
    N, C, H, W = x.shape
    y = np.zeros((N, C, (H - kernel) // stride + 1, (W - kernel) // stride + 1))
    for n, c, i, j in np.ndindex(*y.shape):
        y[n, c, i, j] = max(0, x[n, c, i * stride:i * stride + kernel, j * stride:j * stride + kernel].max())
    return y


expect_failure(check_max_pool2d, max_pool_starting_at_zero)


# %%
def max_pool2d_loops(x, kernel, stride):  # worked solution
    N, C, H, W = x.shape
    OH, OW = (H - kernel) // stride + 1, (W - kernel) // stride + 1
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    best = -np.inf
                    for p in range(kernel):
                        for q in range(kernel):
                            best = max(best, x[n, c, i * stride + p, j * stride + q])
                    y[n, c, i, j] = best
    return y


check_max_pool2d(max_pool2d_loops)


# %% [markdown]
# ### Exercise 3: a filter that finds horizontal strokes
#
# Design a 3×3 kernel that responds strongly to horizontal strokes and hardly at all to vertical
# ones, and gives 0 on a flat background. The check applies it (valid convolution, no padding) to
# an image with one horizontal bar and to one with a vertical bar, both crossing the whole image,
# and compares the largest absolute responses.

# %%
def check_horizontal_filter(kernel):
    kernel = np.asarray(kernel, dtype=np.float64)
    assert kernel.shape == (3, 3), f"the kernel must be 3×3, got shape {kernel.shape}"
    assert abs(kernel.sum()) < 1e-9, (
        f"the weights sum to {kernel.sum():g}, so a flat background gives {kernel.sum():g} times its value, "
        "not 0: make them sum to 0")
    horizontal_bar = np.zeros((1, 1, 12, 12))
    horizontal_bar[..., 5:7, :] = 1.0
    vertical_bar = horizontal_bar.transpose(0, 1, 3, 2).copy()
    layer = nn.Conv2d(1, 1, kernel_size=3, bias=False, dtype=np.float64)
    layer.weight.data[0, 0] = kernel
    on_horizontal, on_vertical = np.abs(layer(horizontal_bar)).max(), np.abs(layer(vertical_bar)).max()
    assert on_horizontal >= 3 * on_vertical, (
        f"the filter answers {on_horizontal:.3g} to the horizontal bar but {on_vertical:.3g} to the vertical "
        "one (need at least 3× more): it still reacts to changes along a row; make each row of the kernel constant")
    assert on_horizontal >= 1, (
        f"the largest response to a horizontal bar of brightness 1 is only {on_horizontal:.3g}: "
        "weigh the rows against each other (e.g. top row negative, bottom row positive)")
    print(f"horizontal-stroke filter: response {on_horizontal:.3g} to the horizontal bar, {on_vertical:.3g} to the vertical one")


expect_failure(check_horizontal_filter, hand_filters["Sobel x"])

# %%
horizontal_strokes = np.array([[-1, -1, -1],  # worked solution: a bright row between two darker ones
                               [2, 2, 2],
                               [-1, -1, -1]], dtype=np.float32)
check_horizontal_filter(horizontal_strokes)

stroke_layer = nn.Conv2d(1, 1, kernel_size=3, bias=False)
stroke_layer.weight.data[0, 0] = horizontal_strokes
sample = nn.data.prepare_images(test_images[:4])
responses = stroke_layer(sample)[:, 0]
plot.images([*sample[:, 0], *responses], titles=[f"digit {label}" for label in test_labels[:4]] + ["response"] * 4,
            ncols=4, symmetric=True, suptitle="the solution's response: red on the horizontal parts of each digit")

# %% [markdown]
# ## What to remember
#
# * The seed's convolution is a cross-correlation; true convolution flips the kernel, and since
#   kernels are learned, libraries skip the flip.
# * A layer adds channels, stride, padding and bias to the formula; the output side is
#   `⌊(H + 2P − K)/S⌋ + 1`, and pixels past the last window are silently ignored.
# * Max pooling routes the gradient to each window's winner, average pooling spreads it.
# * Libraries compute convolutions as im2col + a matrix product: same formula, far faster.
#
# Next: notebook 02 derives and checks the backward pass of each of these operations.
