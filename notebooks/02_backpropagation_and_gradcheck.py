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
# # 02 — Backpropagation and the gradient check
#
# **Goals.** By the end of this notebook you can
# 1. follow the chain rule through a convolution and a max pooling, and compute their backward
#    passes in a few lines of NumPy that agree with nnscratch's layers;
# 2. write a centered-difference numeric gradient and use it, as `nnscratch.gradcheck` does, to
#    test any backward pass, and read the relative error it prints;
# 3. recognise the three things that make a gradient check fail for the wrong reason or pass for
#    none (float32, max-pool ties, dropout in training mode), and see a real bug caught;
# 4. know that gradients *accumulate* until `zero_grad`;
# 5. watch gradient descent (the seed's section 3.3.4) recover a 3×3 edge filter from nothing but
#    (digit, filtered digit) pairs.
#
# **Runtime** on 2 cores (measured 2026-12-01, kernel start included): 3 s in full mode and 2 s in
# quick mode (up to 25 s on a busy machine). `NNSCRATCH_QUICK=1`, used by the tests, trains on
# 1,000 digits instead of 10,000 in the last experiment.
#
# **Prerequisites.** Notebook 01 (the convolution and pooling formulas) and the derivative of a
# function of one variable. The backward formulas are derived step by step in
# [docs/formulas.md](../docs/formulas.md) (§1 convolution, §2 pooling, §8 the gradient check); the
# article's sections are summarised in [docs/seed.md](../docs/seed.md).

# %%
import nnscratch as nn
from nnscratch import notebook
session = notebook.start("02 — Backpropagation and the gradient check")  # prints backend, threads, mode; sets inline figure dpi
QUICK, OUT = session.quick, session.out                      # OUT: git-ignored runs/notebooks/<name>/ under the repo root

# %%
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from nnscratch import plot
from nnscratch.gradient_check import check_module, numeric_gradient, relative_error

np.set_printoptions(precision=4, suppress=True, linewidth=110)

# %% [markdown]
# ## 1. The chain rule through a convolution
#
# nnscratch has no autograd: every layer has a `forward(x)` and a `backward(g)`. The `g` a layer
# receives is the **upstream gradient** `∂L/∂y` (how the loss changes with each of its outputs);
# `backward` returns `∂L/∂x` for the layer below and *adds* `∂L/∂w` to each parameter's `.grad`.
# Everything rests on the chain rule (docs/formulas.md, introduction):
#
# `∂L/∂x_a = Σ_b (∂L/∂y_b) · (∂y_b/∂x_a)` — a sum over *every* output `y_b` that `x_a` influences.
#
# For one channel, stride 1 and no padding, the convolution of the seed's section 3.3.1 is
# `y[i,j] = Σ_p Σ_q x[i+p, j+q] · k[p,q]`. docs/formulas.md §1 differentiates it:
#
# * **weights** — `∂L/∂k[p,q] = Σ_i Σ_j g[i,j] · x[i+p, j+q]`: *a correlation of the input with the
#   upstream gradient* (slide `g` over `x` exactly as the forward pass slides `k` over `x`);
# * **input** — pixel `x[r,s]` lies in every window `(i, j)` with `i = r − p`, `j = s − q`, so
#   `∂L/∂x[r,s] = Σ_p Σ_q g[r−p, s−q] · k[p,q]`: *a "full" convolution of `g` with the kernel flipped
#   by 180°* (pad `g` with `K−1` zeros on each side, then correlate with `k[::-1, ::-1]`; the flip is
#   the `i = r − p` of the index bookkeeping).
#
# Both in NumPy, with `sliding_window_view` giving every `K×K` window:

# %%
def correlate_valid(image, kernel):
    """out[i, j] = Σ_p Σ_q image[i+p, j+q] · kernel[p, q]  (the forward formula of seed 3.3.1)."""
    windows = sliding_window_view(image, kernel.shape)          # (OH, OW, KH, KW)
    return np.einsum("ijpq,pq->ij", windows, kernel)


def conv_grad_input(g, kernel):
    """∂L/∂x: full convolution of g with the kernel flipped by 180°."""
    kh, kw = kernel.shape
    g_padded = np.pad(g, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
    return correlate_valid(g_padded, kernel[::-1, ::-1])


def conv_grad_kernel(x, g):
    """∂L/∂k: correlation of the input with the upstream gradient."""
    return correlate_valid(x, g)


rng = np.random.default_rng(0)
x = rng.standard_normal((5, 5))
kernel = rng.standard_normal((3, 3))
g = rng.standard_normal((3, 3))        # an upstream gradient ∂L/∂y, as the layer above would send it

conv = nn.Conv2d(1, 1, 3, bias=False, dtype=np.float64)
conv.weight.data[0, 0] = kernel
y = conv(x[None, None])                # NCHW: one image, one channel
grad_x = conv.backward(g[None, None])

print("y from the layer equals the formula: ", np.allclose(y[0, 0], correlate_valid(x, kernel)))
print("∂L/∂x by the formula:\n", conv_grad_input(g, kernel))
print("∂L/∂x from Conv2d.backward:\n", grad_x[0, 0])
error_x = relative_error(grad_x[0, 0], conv_grad_input(g, kernel))
error_k = relative_error(conv.weight.grad[0, 0], conv_grad_kernel(x, g))
print(f"relative error, ∂L/∂x: {error_x:.1e}   ∂L/∂k: {error_k:.1e}   (expected: float64 rounding, below 1e-12)")
assert error_x < 1e-12 and error_k < 1e-12

# %% [markdown]
# ## 2. … and through a max pooling
#
# Inside one window, `y = max(x_1, …, x_K)` is locally just `y = x_winner`: its derivative is 1 for
# the winner and 0 for the others (docs/formulas.md §2). So max pooling's backward **routes** each
# output's gradient to the pixel that won its window and sends nothing anywhere else.
#
# Chain the two layers: `x → conv 3×3 → max pool 2×2 → y`, loss `L = Σ y ⊙ u` for a fixed random
# `u` (so `∂L/∂y = u`). Backpropagation runs the chain backwards: route `u` through the pool to get
# `∂L/∂(conv output)`, then apply the two convolution formulas above.

# %%
x = rng.standard_normal((6, 6))
u = rng.standard_normal((2, 2))        # ∂L/∂y for the 2×2 pooled output

net = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False, dtype=np.float64), nn.MaxPool2d(2))
net[0].weight.data[0, 0] = kernel
pooled = net(x[None, None])
grad_x_library = net.backward(u[None, None])[0, 0]

# by hand: forward, then the chain rule backwards
z = correlate_valid(x, kernel)         # conv output, 4×4
grad_z = np.zeros_like(z)              # ∂L/∂z: u routed to each window's winner
for i in range(2):
    for j in range(2):
        window = z[2 * i:2 * i + 2, 2 * j:2 * j + 2]
        p, q = np.unravel_index(np.argmax(window), window.shape)
        grad_z[2 * i + p, 2 * j + q] += u[i, j]
grad_x_by_hand = conv_grad_input(grad_z, kernel)

print("conv output z:\n", z)
print("∂L/∂z (u routed to the winners, zero elsewhere):\n", grad_z)
error_x = relative_error(grad_x_library, grad_x_by_hand)
error_k = relative_error(net[0].weight.grad[0, 0], conv_grad_kernel(x, grad_z))
print(f"relative error vs Sequential.backward, ∂L/∂x: {error_x:.1e}   ∂L/∂k: {error_k:.1e}   (expected below 1e-12)")
assert error_x < 1e-12 and error_k < 1e-12
plot.images([x, z, grad_z, grad_x_by_hand], ["input x", "conv output z", "∂L/∂z (routed u)", "∂L/∂x"],
            symmetric=True, ncols=4)

# %% [markdown]
# Read the figure right to left, as backpropagation runs: four gradient values land on the four
# winners of `z`, and the flipped-kernel convolution spreads each of them back over the 3×3 patch
# of `x` that produced its winner (patches that overlap add up).
# Twelve of the sixteen conv outputs receive no gradient at all: they lost their window. That is
# why max pooling's backward is so cheap, and also why it is not differentiable where two pixels
# tie (section 5).
#
# ## 3. The numeric gradient: trust nothing, check everything
#
# A backward pass is easy to get *almost* right. The test that catches it needs no calculus: nudge
# one input by `±ε` and watch the output (docs/formulas.md §8):
#
# `∂f/∂v_i ≈ ( f(v + ε e_i) − f(v − ε e_i) ) / (2ε)`
#
# This **centered** difference is accurate to `O(ε²)`: in the Taylor expansions of `f(v ± ε)` the
# even-order terms cancel (a one-sided difference is only `O(ε)`). The scalar `f` is the layer's
# output summed against a fixed random `u`, so every output matters and the analytic gradient is
# exactly `backward(u)`. Here it is, in a few lines:

# %%
def my_numeric_gradient(f, v, eps=1e-6):
    """Centered differences of the scalar f() with respect to every element of the array v (changed in place, restored)."""
    def f_with(i, value):                    # f() with v[i] set to value, then v[i] restored
        original, v[i] = v[i], value
        result = f()
        v[i] = original
        return result

    grad = np.zeros(v.shape)
    for i in np.ndindex(v.shape):
        grad[i] = (f_with(i, v[i] + eps) - f_with(i, v[i] - eps)) / (2 * eps)
    return grad


nn.manual_seed(0)
layer = nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64)   # channels, padding and a bias: more to get wrong
x = rng.standard_normal((2, 2, 5, 5))
u = rng.standard_normal(layer(x).shape)


def f():
    return float(np.sum(layer(x) * u))


layer.zero_grad()
layer(x)
analytic = {"input": layer.backward(u), "weight": layer.weight.grad, "bias": layer.bias.grad}
numeric = {"input": my_numeric_gradient(f, x),
           "weight": my_numeric_gradient(f, layer.weight.data),
           "bias": my_numeric_gradient(f, layer.bias.data)}
for name in analytic:
    print(f"{name:>6}: relative error {relative_error(analytic[name], numeric[name]):.1e}")
print("expected: a correct float64 backward gives about 1e-9 or less; a wrong one 1e-2 or more")

# %% [markdown]
# The **relative error** is `max|a − n| / max(1e-8, max|a| + max|n|)`: scale-free, so it means the
# same for tiny and huge gradients (the `1e-8` floor avoids 0/0 when both vanish). The library's
# `nnscratch.gradcheck(layer, x)` does the same with its own `numeric_gradient` (in
# `nnscratch.gradient_check`, next to `relative_error` and `check_module`), raises `GradcheckError`
# when any error exceeds `tol=1e-6`, and otherwise returns the errors:

# %%
errors = nn.gradcheck(layer, x)
for name, error in errors.items():
    print(f"gradcheck {name:>6}: {error:.1e}")
difference = relative_error(my_numeric_gradient(f, x), numeric_gradient(f, x))
print(f"my numeric gradient vs the library's: relative difference {difference:.1e} (the same formula: expected below 1e-12)")
assert difference < 1e-12
assert max(errors.values()) < 1e-8 and max(relative_error(analytic[k], numeric[k]) for k in analytic) < 1e-8

# %% [markdown]
# ## 4. Why float32 fails a check that float64 passes
#
# Training runs in float32, so why check in float64? Two errors pull `ε` in opposite directions:
#
# * **truncation**: the Taylor terms the formula drops, `O(ε²)`, shrink with `ε`;
# * **rounding**: `f` is computed with a relative precision `δ` (float32: `δ ≈ 6e-8`, i.e. about
#   1e-7; float64: `δ ≈ 1e-16`), so `f(v + ε) − f(v − ε)` carries an absolute error of about
#   `δ·|f|`, and dividing by `2ε` blows it up to `O(δ/ε)`. Worse, in float32 `v + ε` itself is
#   rounded: near 1 the representable numbers are 1.2e-7 apart, so `ε = 1e-6` is a step of 8 or 9
#   units and not exactly `ε`.
#
# With a curvature `C` (the size of `f'''`) the total error is about `C·ε² + δ/ε`. It is smallest near
# `ε ≈ δ^(1/3)`, where it is about `δ^(2/3)`: in float64, `ε ≈ 5e-6` and errors near 1e-11; in
# float32, `ε ≈ 4e-3` and errors no better than about 1e-5 — above the check's tolerance (1e-6)
# whatever `ε` you pick. The table measures it on a small network with a curved output (a
# log-softmax: on a purely linear layer the truncation error would be exactly zero), computed
# entirely in float32 or entirely in float64:

# %%
def relative_error_at(eps, dtype, seed=0):
    """Relative error of the input gradient of a small conv net, everything computed in `dtype`."""
    nn.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Dense(32, 4), nn.LogSoftmax()).to(dtype)
    data = np.random.default_rng(seed)
    x = data.standard_normal((2, 1, 6, 6)).astype(dtype)
    u = data.standard_normal((2, 4)).astype(dtype)
    net.zero_grad()
    net(x)
    analytic = net.backward(u)
    numeric = my_numeric_gradient(lambda: np.sum(net(x) * u, dtype=dtype), x, dtype(eps))
    return relative_error(analytic, numeric)


eps_values = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]
table = {dtype.__name__: [relative_error_at(eps, dtype) for eps in eps_values] for dtype in (np.float32, np.float64)}
print("     eps   float32 error   float64 error")
for k, eps in enumerate(eps_values):
    print(f"{eps:8.0e}   {table['float32'][k]:13.1e}   {table['float64'][k]:13.1e}")

# %% [markdown]
# Read the table from the top. The float64 column falls like `ε²` (two decades per decade of `ε`)
# down to about 1e-11 near `ε = 1e-4`, then rises like `1/ε` as rounding takes over: a wide valley
# of errors far below the tolerance 1e-6, which is why the library checks in float64 with
# `ε = 1e-6`. The float32 column does the same with rounding a billion times larger: it is best at
# the *largest* `ε` (this network is only gently curved, so truncation stays small), never below
# about 1e-5, and at the library's `ε = 1e-6` a correct float32 backward looks as wrong as a real
# bug. So `check_module` converts the module to float64 first (`module.double()`, in place),
# whatever dtype it was built with.

# %%
float32_error, float64_error = table["float32"][eps_values.index(1e-6)], table["float64"][eps_values.index(1e-6)]
print(f"at eps = 1e-6: float32 {float32_error:.1e} (a correct backward, yet expected 1e-2 or more), "
      f"float64 {float64_error:.1e} (expected about 1e-9)")
print(f"best over the table: float32 {min(table['float32']):.1e} (expected about 1e-5, never below the tolerance 1e-6), "
      f"float64 {min(table['float64']):.1e} (expected about 1e-11)")
assert float32_error > 1e-2 and float64_error < 1e-8
assert min(table["float32"]) > 1e-6 and min(table["float64"]) < 1e-10

# %% [markdown]
# ## 5. Max-pool ties: a kink, not a bug
#
# A real digit is mostly background: whole 2×2 windows of exactly equal pixels. At a tie the max is
# not differentiable. Nudge the first of four equal pixels up by `ε` and the max rises by `ε`;
# nudge it down and the max does not move (another pixel takes over). The centered difference
# averages the two one-sided slopes, 1 and 0, and reports ½ — for *every* pixel of the window —
# while the backward pass follows PyTorch's rule (docs/formulas.md §2): the first maximum gets all
# of the gradient, the others none. Neither is wrong; the check is simply not valid at a kink.

# %%
(train_images, train_labels), _ = nn.data.load_mnist()
digit = nn.data.prepare_images(train_images[:1]).astype(np.float64)   # (1, 1, 28, 28), background exactly -1
pool = nn.MaxPool2d(2)
try:
    nn.gradcheck(pool, digit)
    raise AssertionError("expected the check to fail at the ties")
except nn.GradcheckError as error:
    print("GradcheckError:", error)
print("(a relative error of order 0.1-1, as large as a real bug's)")

tied_windows = np.mean([np.sum(w == w.max()) > 1 for w in sliding_window_view(digit[0, 0], (2, 2))[::2, ::2].reshape(-1, 4)])
print(f"windows of this digit with a tie for the maximum: {tied_windows:.0%}")

# both gradients of f = Σ pool(digit), side by side
ones = np.ones(pool(digit).shape)
backward_grad = pool.backward(ones)[0, 0]
numeric_grad = numeric_gradient(lambda: float(np.sum(pool(digit) * ones)), digit)[0, 0]
print("one tied background window: backward", backward_grad[:2, :2].ravel(), " numeric", numeric_grad[:2, :2].ravel())
assert np.array_equal(backward_grad[:2, :2].ravel(), [1, 0, 0, 0]) and np.allclose(numeric_grad[:2, :2], 0.5)
crop = (slice(4, 16), slice(12, 24))   # a 12×12 corner of the digit's stroke: 36 pooling windows
plot.images([digit[0, 0][crop], backward_grad[crop], numeric_grad[crop]], ["digit", "backward", "numeric"],
            symmetric=True, ncols=3, suptitle="gradient of Σ maxpool(x)")

# %% [markdown]
# In the figure (a corner of the digit, 6×6 pooling windows), the backward pass gives 1 (dark red)
# to one pixel per window; the numeric gradient gives ½ (light red) to every pixel tied for its
# window's maximum — all four in a background window — and 1 only where a window has a single winner.
#
# **The fix:** check on random inputs, where ties have probability zero (and any two values in a
# window differ by far more than `ε`, so a nudge cannot change the winner). The backward pass is
# correct; it is the test point that was bad. The same caution applies to a ReLU input at exactly 0.

# %%
x = np.random.default_rng(1).standard_normal((2, 3, 6, 6))
errors = nn.gradcheck(nn.MaxPool2d(2), x)
print(f"max pooling on random inputs: relative error {errors['input']:.1e} (expected 1e-9 or less)")
errors = nn.gradcheck(nn.MaxPool2d(3, stride=1), x)
print(f"overlapping 3×3 windows, stride 1: relative error {errors['input']:.1e} (expected 1e-9 or less)")
assert errors["input"] < 1e-9

# %% [markdown]
# ## 6. A broken backward, caught
#
# Now the case the check exists for. Forget one transpose in a fully connected layer's input
# gradient: `∂L/∂x = g W` (docs/formulas.md §3) becomes `g Wᵀ`. With a square weight matrix the
# shapes still fit, so nothing crashes and training would run — just badly. The gradient check
# catches it, and its message says *which* gradient is wrong:

# %%
class DenseForgotTranspose(nn.Dense):
    def backward(self, grad_output, need_input_grad=True):
        super().backward(grad_output)              # the parameters' gradients are still right
        return grad_output @ self.weight.data.T    # BUG: ∂L/∂x = g W, not g Wᵀ


nn.manual_seed(0)
broken = DenseForgotTranspose(4, 4, dtype=np.float64)
x = np.random.default_rng(2).standard_normal((3, 4))
try:
    nn.gradcheck(broken, x)
    raise AssertionError("the broken backward was not caught")
except nn.GradcheckError as error:
    print("GradcheckError:", error)
errors = check_module(broken, x)   # the same errors, returned instead of raised
print({name: f"{e:.1e}" for name, e in errors.items()}, "-> only the input gradient is wrong (expected 1e-2 or more)")
assert errors["input"] > 1e-2 and errors["weight"] < 1e-9 and errors["bias"] < 1e-9

# %% [markdown]
# ## 7. Dropout: check one function, not a different one at every pass
#
# A gradient check compares `f` at nearby points, so every forward pass must compute the *same*
# function. Dropout in training mode draws a new random mask at every pass: the finite differences
# would compare different functions and give relative errors near 1, with no hint why. nnscratch
# refuses up front and says what to do:

# %%
nn.manual_seed(0)
model = nn.Sequential(nn.Dense(6, 8), nn.ReLU(), nn.Dropout(0.5), nn.Dense(8, 3))
x = np.random.default_rng(3).standard_normal((4, 6))
try:
    nn.gradcheck(model, x)
except ValueError as error:
    print("ValueError:", error)

# %% [markdown]
# Two ways out. **Eval mode** checks the network as it predicts (dropout is the identity there).
# **A fixed mask** checks the training-mode function: `before_forward` runs before every forward
# pass, and reseeding the dropout layer's own generator there makes every pass draw the same mask.

# %%
errors_eval = nn.gradcheck(model.eval(), x)
model.train()
dropout = model[2]
errors_mask = nn.gradcheck(model, x, before_forward=lambda: dropout.manual_seed(0))
print("eval mode:  ", {name: f"{e:.1e}" for name, e in errors_eval.items()})
print("fixed mask: ", {name: f"{e:.1e}" for name, e in errors_mask.items()})
print("expected: every error 1e-9 or less")
assert max(errors_eval.values()) < 1e-9 and max(errors_mask.values()) < 1e-9

# %% [markdown]
# ## 8. Gradients accumulate until `zero_grad`
#
# `backward` **adds** to `.grad`; it never overwrites it (as in PyTorch). That is what lets a
# layer used twice, or a batch split in two, sum its gradients — and it is why a training step
# calls `optimizer.zero_grad()` first: forget it, and every step uses the sum of all past gradients.
# Two backward calls give exactly twice the gradient (`g + g = 2g` is exact in floating point):

# %%
nn.manual_seed(0)
conv = nn.Conv2d(1, 4, 3)
x = np.random.default_rng(4).standard_normal((2, 1, 8, 8)).astype(np.float32)
g = np.random.default_rng(5).standard_normal((2, 4, 6, 6)).astype(np.float32)

conv(x)
conv.backward(g)
once = conv.weight.grad.copy()
conv.backward(g)                       # the same backward again, without zero_grad
twice = conv.weight.grad.copy()
conv.zero_grad()
print("after zero_grad, .grad is", conv.weight.grad)
conv(x)
conv.backward(g)
print("max |twice − 2·once| =", np.abs(twice - 2 * once).max(), " (expected exactly 0)")
print("max |after zero_grad − once| =", np.abs(conv.weight.grad - once).max(), " (expected exactly 0)")
assert np.array_equal(twice, 2 * once) and np.array_equal(conv.weight.grad, once)

# %% [markdown]
# ## 9. Learning a 3×3 kernel back from its outputs
#
# Everything together: forward, loss, backward, and the seed's gradient descent
# `θ ← θ − η ∇L(θ)` (section 3.3.4, docs/formulas.md §7). Pick a *true* kernel — the Sobel filter
# that detects vertical edges (notebook 01) — filter MNIST digits with it, and hand a `Conv2d(1, 1, 3)`
# with a random kernel only the pairs (digit, filtered digit). With the mean squared error
# (seed 3.3.3, `MSELoss`) the loss is a quadratic function of the 9 weights: a convex problem with a
# single minimum, the true kernel, so gradient descent must find it.
#
# `fit` runs the loop (forward, loss, `zero_grad`, backward, `SGD.step`) and records every step's
# loss in `History.batch_loss`. The targets here are images, not class labels, so instead of a
# `DataLoader` (which yields integer labels) `fit` gets a plain list of `(images, targets)` batches.

# %%
SOBEL = np.array([[1, 0, -1],
                  [2, 0, -2],
                  [1, 0, -1]], dtype=np.float32)
n_images, epochs = (1_000, 6) if QUICK else (10_000, 2)
images = nn.data.prepare_images(train_images[:n_images])            # (N, 1, 28, 28) in [-1, 1]
targets = nn.ops.conv2d(images, SOBEL[None, None])                  # (N, 1, 26, 26): the filtered digits
batches = [(images[i:i + 32], targets[i:i + 32]) for i in range(0, n_images, 32)]

nn.manual_seed(0)
learner = nn.Conv2d(1, 1, 3, bias=False)
initial_kernel = learner.weight.data[0, 0].copy()
optimizer = nn.SGD(learner.parameters(), lr=0.1, momentum=0.9)
history = nn.fit(learner, nn.MSELoss(), optimizer, batches, epochs=epochs, log_every=None)
steps = len(history.batch_loss)
print(f"{steps} steps. Batch loss at step:")
for step in [1, 10, 30, 100, 190, 300, steps]:
    if step <= steps:
        print(f"  {step:4d}: {history.batch_loss[step - 1]:.1e}")
plot.history(history, logy=True)

# %% [markdown]
# On a linear scale the loss would look like "zero" after the first tenth of an epoch; on the
# log scale you see what happens next: on a convex quadratic, gradient descent with momentum
# keeps dividing the error by a constant factor per step (a straight line on a log scale), until
# float32 rounding stops it. Learned vs true kernel (one colour scale for all three, 0 in white):

# %%
learned_kernel = learner.weight.data[0, 0]
plot.images([initial_kernel, learned_kernel, SOBEL], ["random start", "learned", "true (Sobel)"],
            symmetric=True, ncols=3)

# %%
print("learned kernel:\n", learned_kernel)
max_error = np.abs(learned_kernel - SOBEL).max()
print(f"max |learned − true| = {max_error:.1e}")
print("expected: below 1e-3 in every mode; measured over seeds 0-4 of the initial kernel: 1.0e-4 to 1.4e-4 in "
      "quick mode (192 steps), 8e-9 to 1.5e-7 in full mode (626 steps, down to float32 rounding)")
assert max_error < 1e-3
if not QUICK:
    assert max_error < 1e-5, "full mode: expected float32-rounding-level agreement (measured at most 1.5e-7)"

# %% [markdown]
# ## Exercises
#
# Each exercise has a check function that says *what* is wrong, and a worked solution in the
# cell below it (replace it with your own and run the check).
#
# ### Exercise 1 — the backward of ReLU
#
# `y = max(x, 0)`. Write `my_relu_backward(x, grad_y)` returning `∂L/∂x` (docs/formulas.md §4).
# Take the derivative at exactly 0 to be 0, as PyTorch does.

# %%
def check_relu_backward(relu_backward):
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    g = np.array([[10.0, 20.0, 30.0, 40.0, 50.0]])
    got = np.asarray(relu_backward(x, g))
    assert got.shape == x.shape, f"∂L/∂x must have the input's shape {x.shape}, got {got.shape}"
    assert np.all(got[x < 0] == 0), f"where x < 0 the output is constant 0, so no gradient may pass; got {got[x < 0]}"
    assert np.all(got[x > 0] == g[x > 0]), (
        f"where x > 0, y = x, so ∂L/∂x = ∂L/∂y: expected {g[x > 0]}, got {got[x > 0]} (multiplied by x instead of 1?)")
    assert got[x == 0] == 0, f"at x = 0 the convention is a zero gradient; got {got[x == 0]}"
    print("ReLU backward: correct")


try:   # a common mistake, to see what the check says: multiplying by the output instead of the mask
    check_relu_backward(lambda x, grad_y: grad_y * np.maximum(x, 0))
except AssertionError as error:
    print("a wrong answer:", error)


def my_relu_backward(x, grad_y):
    return grad_y * (x > 0)


check_relu_backward(my_relu_backward)


class MyReLU(nn.ReLU):   # the solution inside a layer, checked the library's way
    def forward(self, x):
        self.x = x
        return super().forward(x)

    def backward(self, grad_output, need_input_grad=True):
        return my_relu_backward(self.x, grad_output)


x = np.random.default_rng(6).standard_normal((3, 7))   # random: no input sits on the kink at 0
print(f"gradcheck of MyReLU: {nn.gradcheck(MyReLU(), x)['input']:.1e} (expected 1e-9 or less)")

# %% [markdown]
# ### Exercise 2 — average pooling's backward, with loops
#
# Write `my_avgpool_backward(grad_y, input_shape, k, stride)` for a `k×k` average pooling (no
# padding) on an NCHW batch, with plain loops over the output positions. Every pixel of a window
# receives `∂L/∂y / k²` (docs/formulas.md §2), and windows may overlap when `stride < k`.
# Then put it inside an `AvgPool2d` subclass and `gradcheck` it.

# %%
def check_avgpool_backward(avgpool_backward):
    data = np.random.default_rng(7)
    for k, stride in [(2, 2), (3, 1), (3, 2)]:
        x = data.standard_normal((2, 3, 7, 7))
        layer = nn.AvgPool2d(k, stride=stride)
        y = layer(x)
        g = data.standard_normal(y.shape)
        expected = layer.backward(g)
        got = np.asarray(avgpool_backward(g, x.shape, k, stride))
        case = f"kernel {k}, stride {stride}"
        assert got.shape == x.shape, f"{case}: ∂L/∂x must have the input's shape {x.shape}, got {got.shape}"
        if np.allclose(got, expected * k * k):
            raise AssertionError(f"{case}: every value is {k * k} times too large: divide ∂L/∂y by k² = {k * k}")
        if np.allclose(got, expected / (k * k)):
            raise AssertionError(f"{case}: every value is {k * k} times too small: divided by k² twice?")
        wrong = ~np.isclose(got, expected)
        if wrong.any():
            hint = (" Windows overlap here: a pixel in several windows must receive the SUM of their shares "
                    "(+=, not =)." if stride < k else "")
            raise AssertionError(f"{case}: {wrong.sum()} of {wrong.size} input gradients are wrong.{hint}")
    print("average pooling backward: correct (non-overlapping and overlapping windows)")


def my_avgpool_backward(grad_y, input_shape, k, stride):
    grad_x = np.zeros(input_shape)
    for i in range(grad_y.shape[2]):
        for j in range(grad_y.shape[3]):
            share = grad_y[:, :, i, j] / (k * k)
            grad_x[:, :, i * stride:i * stride + k, j * stride:j * stride + k] += share[:, :, None, None]
    return grad_x


check_avgpool_backward(my_avgpool_backward)

try:   # a common mistake, to see what the check says: forgetting the 1/k² of the mean
    check_avgpool_backward(lambda grad_y, shape, k, stride: my_avgpool_backward(grad_y, shape, k, stride) * k * k)
except AssertionError as error:
    print("a wrong answer:", error)


class MyAvgPool2d(nn.AvgPool2d):   # the solution inside a layer, checked the library's way
    def forward(self, x):
        self.x_shape = x.shape
        return super().forward(x)

    def backward(self, grad_output, need_input_grad=True):
        return my_avgpool_backward(grad_output, self.x_shape, self.kernel_size[0], self.stride[0])


x = np.random.default_rng(8).standard_normal((2, 2, 7, 7))
print(f"gradcheck of MyAvgPool2d(3, stride=2): {nn.gradcheck(MyAvgPool2d(3, stride=2), x)['input']:.1e} "
      "(expected 1e-9 or less)")

# %% [markdown]
# ### Exercise 3 — find the bug
#
# This loop version of a single-channel convolution's input gradient looks right and returns an
# array of the right shape. Run the check to see what it gets wrong, then fix it in
# `fixed_conv_grad_input` (compare with the formula of section 1).

# %%
def buggy_conv_grad_input(g, kernel, input_shape):
    grad_x = np.zeros(input_shape)
    kh, kw = kernel.shape
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            grad_x[i:i + kh, j:j + kw] = g[i, j] * kernel
    return grad_x


def check_conv_grad_input(conv_grad_input_fn):
    data = np.random.default_rng(9)
    x, k = data.standard_normal((6, 6)), data.standard_normal((3, 3))
    layer = nn.Conv2d(1, 1, 3, bias=False, dtype=np.float64)
    layer.weight.data[0, 0] = k
    g = data.standard_normal(layer(x[None, None]).shape)
    expected = layer.backward(g)[0, 0]
    got = np.asarray(conv_grad_input_fn(g[0, 0], k, x.shape))
    assert got.shape == x.shape, f"∂L/∂x must have the input's shape {x.shape}, got {got.shape}"
    wrong = ~np.isclose(got, expected)
    if not wrong.any():
        print("convolution input gradient: correct")
        return
    windows_per_pixel = correlate_valid(np.pad(np.ones((4, 4)), 2), np.ones((3, 3)))   # windows containing each pixel
    if np.all(windows_per_pixel[wrong] > 1):
        raise AssertionError(
            f"{wrong.sum()} of {wrong.size} pixels are wrong, all of them inside more than one window (only the "
            "corners, in a single window, are right): a pixel must receive the SUM over every window that "
            "contains it (+=), not just the last one (=)")
    raise AssertionError(f"{wrong.sum()} of {wrong.size} pixels are wrong; compare with conv_grad_input of section 1")


try:
    check_conv_grad_input(buggy_conv_grad_input)
except AssertionError as error:
    print("the check says:", error)

# %%
def fixed_conv_grad_input(g, kernel, input_shape):
    grad_x = np.zeros(input_shape)
    kh, kw = kernel.shape
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            grad_x[i:i + kh, j:j + kw] += g[i, j] * kernel   # the chain rule sums over every window
    return grad_x


check_conv_grad_input(fixed_conv_grad_input)

# %% [markdown]
# ## What to remember
#
# * Backpropagation is the chain rule, applied layer by layer from the loss down; the work is
#   bookkeeping: *which outputs did this input influence?* A convolution's input gradient is a
#   full convolution with the flipped kernel; its weight gradient a correlation of the input with
#   the upstream gradient; max pooling routes each gradient to its window's winner.
# * Check every backward pass with centered differences, in float64, at a random point away from
#   kinks (ties, ReLU at 0), with dropout in eval mode or a fixed mask. Correct: ~1e-9 or less.
#   Wrong: 1e-2 or more. In between, suspect the test point before the code.
# * Gradients accumulate: zero them before every step.
#
# Next: notebook 03 trains the seed's Net on MNIST with these layers.
