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
# # 03 — Training the seed's Net
#
# **Goals.** By the end of this notebook you can
# 1. read the seed article's PyTorch code (its sections 4.1–4.5) and write the same thing with
#    nnscratch, line by line, knowing the two places where they differ and why;
# 2. climb the *sanity ladder* before trusting a long run: the model summary, the initial loss
#    (≈ ln 10), overfitting one small batch, and what a too-high learning rate does;
# 3. train the Net on MNIST with a per-batch learning curve and evaluate it on the test set;
# 4. look inside the trained net: its first filters, one digit's feature maps through every layer,
#    the confusion matrix, the most confident mistakes, and why dropout makes train-mode accuracy
#    lower than eval-mode accuracy on the very same images;
# 5. stop a run and resume it from a checkpoint with a bit-identical result;
# 6. see why classifiers are trained with cross-entropy rather than the article's other loss, MSE.
#
# **Runtime** on 2 cores (measured 2026-12-01, kernel start included): 66 s in full mode (most of
# it the full 60,000-image epoch; 8 minutes were measured while five other jobs shared the two
# cores), 14 s in quick mode.
# Quick mode (`NNSCRATCH_QUICK=1`, used by the tests) trains on 2,000 images instead of the full
# epoch, tests on 1,000 test images instead of 10,000 and compares the losses on 1,000 images
# instead of 10,000; every invariant is still checked, the accuracy claims are not.
#
# **Prerequisites.** Notebooks 01 (convolution, pooling) and 02 (backward passes). The article's
# sections are summarised in [docs/seed.md](../docs/seed.md); the losses and their gradients are
# derived in [docs/formulas.md](../docs/formulas.md) §4 (softmax, log-softmax) and §6 (losses).

# %%
import nnscratch as nn
from nnscratch import notebook
session = notebook.start("03 — Training the seed's Net")  # prints backend, threads, mode; sets inline figure dpi
QUICK, OUT = session.quick, session.out                      # OUT: git-ignored runs/notebooks/<name>/ under the repo root

# %%
import math
import time

import numpy as np

from nnscratch import plot
from nnscratch.data import DataLoader, load_mnist, prepare_images

np.set_printoptions(precision=4, suppress=True, linewidth=110)

# %% [markdown]
# ## 1. The article's code beside nnscratch
#
# The article trains its `Net` with PyTorch. nnscratch gives its classes PyTorch's names, so the
# code maps almost line for line (the same mapping, as a runnable script, is
# `examples/mnist_train.py`):
#
# | article (PyTorch) | nnscratch | note |
# |---|---|---|
# | **4.1** `transforms.Compose([ToTensor(), Normalize((0.5,), (0.5,))])` | `prepare_images(images, mean=0.5, std=0.5)` | uint8 → float32 `(x/255 − 0.5)/0.5`, in [−1, 1], shape (N, 1, 28, 28) |
# | `torchvision.datasets.MNIST(root='./data', train=True, download=True, ...)` | `load_mnist(download=False)` | reads the copy shipped in `data/mnist/`; nothing is downloaded |
# | `DataLoader(trainset, batch_size=64, shuffle=True)` | `DataLoader(images, labels, batch_size=64, shuffle=True, seed=0, transform=prepare_images)` | the shuffle is seeded: runs repeat exactly |
# | `DataLoader(testset, batch_size=64, shuffle=False)` | `DataLoader(..., batch_size=500, shuffle=False, ...)` | in eval mode the batch size changes no result, only speed |
# | **4.2** `class Net(nn.Module): ...` (conv1, conv2, max_pool2d, dropout1, flatten, fc1, dropout2, fc2, log_softmax) | `nn.models.seed_net()` | a `Sequential` with the same layer and parameter names |
# | **4.3** `criterion = nn.CrossEntropyLoss()` | `criterion = nn.NLLLoss()` | **difference 1**, see below |
# | `optimizer = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)` | `nn.SGD(net.parameters(), lr=0.01, momentum=0.9)` | same update rule as PyTorch (docs/formulas.md §7) |
# | `optimizer.zero_grad()` | `optimizer.zero_grad()` | |
# | `outputs = net(inputs)` | `outputs = net(inputs)` | |
# | `loss = criterion(outputs, labels)` | `loss = criterion(outputs, labels)` | a plain number |
# | `loss.backward()` | `net.backward(criterion.backward())` | **difference 2**: no autograd |
# | `optimizer.step()` | `optimizer.step()` | |
# | `running_loss += loss.item()`; print every 2000 batches | `fit(..., log_every=200)` | an epoch has only ⌈60000/64⌉ = 938 batches: the article's line never prints |
# | the whole `for epoch in range(10)` loop | `nn.fit(net, criterion, optimizer, trainloader, epochs)` | plus a `History`, checkpoints, divergence detection |
# | **4.5** `with torch.no_grad(): ... torch.max(outputs.data, 1) ... correct += ...` | `nn.evaluate(net, criterion, testloader)` | eval mode (dropout off), accuracy, mean loss, confusion matrix |
#
# (The article's 4.4, "fine-tuning", is a heading without code; notebook 04 does it.)
#
# **Difference 1 — the loss.** The article's Net ends in `F.log_softmax`, so it outputs
# log-probabilities, and it is trained with `CrossEntropyLoss`, which applies log-softmax *again*.
# That happens to be harmless: for log-probabilities `y`, `Σ exp(y) = 1`, so
# `log_softmax(y) = y − log 1 = y`. The loss that belongs to log-probabilities is the negative
# log-likelihood `NLLLoss`; `CrossEntropyLoss` is `LogSoftmax` + `NLLLoss` in one, for networks
# that end in raw scores (logits): `nn.models.seed_net(log_softmax=False)`. Both pairings compute
# the article's 3.3.3 cross-entropy `L = −Σ t_i log y_i` (docs/formulas.md §6).
#
# **Difference 2 — no autograd.** PyTorch records every operation and `loss.backward()` walks that
# record back. nnscratch records nothing: each layer has a hand-written `backward`
# (notebook 02). The loss object remembers its last call, `criterion.backward()` returns `∂L/∂outputs`,
# and `net.backward(...)` passes it down through every layer, filling each parameter's `.grad`.
#
# Now the nnscratch column, run. First the data (4.1) and the Net (4.2):

# %%
(train_images, train_labels), (test_images, test_labels) = load_mnist(download=False)
print("train:", train_images.shape, train_images.dtype, " test:", test_images.shape)

x = prepare_images(train_images[:64])          # ToTensor + Normalize((0.5,), (0.5,))
print("prepared batch:", x.shape, x.dtype, f"values in [{x.min():.1f}, {x.max():.1f}]")

nn.manual_seed(0)                              # torch.manual_seed(0): weights and dropout masks
net = nn.models.seed_net()                     # net = Net()
criterion = nn.NLLLoss()                       # the article: nn.CrossEntropyLoss() (difference 1)
optimizer = nn.SGD(net.parameters(), lr=0.01, momentum=0.9)
net

# %% [markdown]
# Difference 1, checked: on the Net's log-probability outputs, `CrossEntropyLoss` and `NLLLoss`
# give the same loss, and after the backward pass through the Net's `LogSoftmax` the same
# gradients for every weight — although the gradients they hand to the last layer differ
# (`(softmax(y) − onehot)/N` against `−onehot/N`; the LogSoftmax backward maps both to the same thing).

# %%
y = train_labels[:64]
outputs = net(x)
nll, cross_entropy = nn.NLLLoss(), nn.CrossEntropyLoss()
loss_nll, loss_ce = nll(outputs, y), cross_entropy(outputs, y)
print(f"NLLLoss {loss_nll:.6f}   CrossEntropyLoss on the same log-probabilities {loss_ce:.6f}")

grads = {}
for name, loss in (("NLLLoss", nll), ("CrossEntropyLoss", cross_entropy)):
    optimizer.zero_grad()
    net.backward(loss.backward())              # same forward pass (same dropout mask), two backward passes
    grads[name] = {k: p.grad.copy() for k, p in net.named_parameters()}
worst = max(np.abs(grads["NLLLoss"][k] - grads["CrossEntropyLoss"][k]).max() / np.abs(grads["NLLLoss"][k]).max()
            for k in grads["NLLLoss"])
print(f"largest difference of a parameter gradient, relative to its size: {worst:.1e} (float32 rounding: ~1e-6)")
print("gradients handed to the last layer differ by", f"{np.abs(nll.backward() - cross_entropy.backward()).max():.3f}")
assert abs(loss_nll - loss_ce) < 1e-5 and worst < 1e-4
optimizer.zero_grad()

# %% [markdown]
# Difference 2, as a learner meets it: the PyTorch habit `loss.backward()` stops with a message
# saying what to write instead. And feeding raw scores to `NLLLoss` (a network *without*
# `LogSoftmax`) is refused rather than silently giving a meaningless negative loss.

# %%
try:
    loss_nll.backward()
except TypeError as error:
    print("loss.backward():", error)

logits_net = nn.models.seed_net(log_softmax=False)   # ends in fc2: raw scores
try:
    nn.NLLLoss()(logits_net(x), y)
except ValueError as error:
    print("NLLLoss on logits:", error)

# %% [markdown]
# ## 2. The sanity ladder
#
# A full epoch costs a minute; a bug found after it costs a minute more each time. Cheap checks
# first, each one catching a different kind of mistake (the list follows CS231n's "babysitting
# the learning process").
#
# ### 2.1 The summary: shapes, parameters, cost
#
# `transfer.summary` pushes a shape through the model: a wrong `Linear(9216, ...)` or a missing
# `Flatten` shows here, before any data flows. FLOPs count a multiply-add as 2.

# %%
print(nn.transfer.summary(net, optimizer))

parameters = sum(p.size for p in net.parameters())
print(f"\nparameters: {parameters:,} (expected 1,199,882: conv1 320 + conv2 18,496 + fc1 1,179,776 + fc2 1,290)")
assert parameters == 320 + 18_496 + 1_179_776 + 1_290

# %% [markdown]
# Almost all parameters (98 %) sit in `fc1` (9216 × 128), but almost all the arithmetic is in
# `conv2`: a convolution reuses its few weights at every one of the 24 × 24 positions.
#
# ### 2.2 The initial loss is ln 10
#
# A freshly initialised net knows nothing, so its outputs are close to uniform: `p ≈ 1/10` for every
# class, and the cross-entropy `−log p_true ≈ ln 10 = 2.303`. A much larger value means the
# initialisation is too large (over-confident random guesses) or the loss is fed the wrong thing;
# a much smaller one, that the labels leak into the inputs.

# %%
batch = prepare_images(train_images[:256])
first_loss = criterion(net(batch), train_labels[:256])       # training mode, as the first step sees it
print(f"initial loss {first_loss:.4f}, expected ln 10 = {math.log(10):.4f}")
print("measured over seeds 0-4 on these 256 images in training mode: 2.307-2.323; asserting within 0.05 of ln 10")
assert abs(first_loss - math.log(10)) < 0.05

# %% [markdown]
# ### 2.3 Overfit one small batch
#
# A network with 1.2 million parameters must be able to memorise 32 images. If it cannot, the
# bug is in the model, the loss or the update — not in the data or the hyper-parameters. Here the
# article's training loop is written out by hand (section 4.3) and run 50 times on the same batch.

# %%
nn.manual_seed(0)
net = nn.models.seed_net()
optimizer = nn.SGD(net.parameters(), lr=0.01, momentum=0.9)
small_x, small_y = prepare_images(train_images[:32]), train_labels[:32]

STEPS = 50
losses = []
for step in range(STEPS):
    net.train()
    optimizer.zero_grad()                        # optimizer.zero_grad()
    outputs = net(small_x)                       # outputs = net(inputs)
    loss = criterion(outputs, small_y)           # loss = criterion(outputs, labels)
    net.backward(criterion.backward())           # loss.backward()
    optimizer.step()                             # optimizer.step()
    losses.append(loss.item())                   # running_loss += loss.item()
print("loss every 10 steps:", np.round(losses[::10] + [losses[-1]], 3))

overfit_accuracy = float(np.mean(nn.predict(net, small_x) == small_y))    # eval mode: dropout off
print(f"training accuracy on the 32 images after {STEPS} steps: {overfit_accuracy:.0%} (expected 100 %; "
      "seeds 0-2 reach it in 35-40 steps)")
assert overfit_accuracy == 1.0 and losses[-1] < 0.3 * losses[0]

# %% [markdown]
# ### 2.4 A learning rate far too high
#
# The update is `θ ← θ − η ∇L` (the article's 3.3.4). With `η` ten thousand times too large the
# first steps throw the weights so far that the activations overflow float32 and the loss becomes
# NaN. `fit` checks every loss and stops with `TrainingDivergedError` *before* that step changes
# any weight, naming the epoch and batch — instead of training on for an hour on NaNs.

# %%
nn.manual_seed(0)
net = nn.models.seed_net()
optimizer = nn.SGD(net.parameters(), lr=1e4, momentum=0.9)
loader = DataLoader(train_images[:1024], train_labels[:1024], batch_size=64, shuffle=True, seed=0,
                    transform=prepare_images)
diverged = None
with np.errstate(over="ignore", invalid="ignore"):   # the overflow is the point here: no NumPy warnings
    try:
        nn.fit(net, criterion, optimizer, loader, epochs=1)
    except nn.TrainingDivergedError as error:
        diverged = error
        print("TrainingDivergedError:", error)
print("seeds 0-2 with lr=1e4 stop at batch index 3; expected: a NaN or infinite loss within the first epoch")
assert diverged is not None and not math.isfinite(diverged.loss)

# %% [markdown]
# Only NaN and infinity are caught. Between the good `lr = 0.01` and this one lies a range
# (we measured `lr` from 1 to 100) where the loss stays finite but climbs to 10⁶…10¹⁸, or every ReLU
# dies and the accuracy sits at 10 % (chance) — no error is raised. That is why the next rung is
# to *look at the learning curve*. Exercise 3 writes a check for those runs.
#
# ### 2.5 Training, with a per-batch learning curve
#
# Now the article's experiment: one epoch over the 60,000 training images (quick mode: 2,000),
# then the test set (4.5). `History.batch_loss` keeps the loss of every step, so even one epoch has
# a curve; `plot.history` draws it.

# %%
TRAIN_N = 2_000 if QUICK else len(train_labels)
TEST_N = 1_000 if QUICK else len(test_labels)
if QUICK:
    subset = np.random.default_rng(0).permutation(len(train_labels))[:TRAIN_N]   # 2,000 images at random
else:
    subset = np.arange(len(train_labels))       # the whole set in file order, as examples/mnist_train.py reads it

nn.manual_seed(0)
net = nn.models.seed_net()
optimizer = nn.SGD(net.parameters(), lr=0.01, momentum=0.9)
trainloader = DataLoader(train_images[subset], train_labels[subset], batch_size=64, shuffle=True, seed=0,
                         transform=prepare_images)
testloader = DataLoader(test_images[:TEST_N], test_labels[:TEST_N], batch_size=500, shuffle=False,
                        transform=prepare_images)

started = time.perf_counter()
history = nn.fit(net, criterion, optimizer, trainloader, epochs=1, log_every=None)
print(f"trained on {TRAIN_N:,} images ({len(history.batch_loss)} steps) in {time.perf_counter() - started:.1f} s")

result = nn.evaluate(net, criterion, testloader)                 # the article's 4.5
print("Accuracy of the network on the %d test images: %.2f %%" % (result["count"], 100 * result["accuracy"]))
plot.history(history, title=f"seed_net, one epoch on {TRAIN_N:,} images")

# %% [markdown]
# The thin line is each batch's loss: noisy (64 images are a small sample) but clearly falling,
# from ln 10 to about 0.1 in a few hundred steps. The circle is the mean over the epoch, and the
# accuracy point beside it was measured *during* the epoch, while the net was still learning and
# with dropout on — which is why it is below the test accuracy.

# %%
print(f"steps recorded: {len(history.batch_loss)} = ⌈{TRAIN_N} / 64⌉ = {math.ceil(TRAIN_N / 64)}")
assert len(history.batch_loss) == sum(history.epoch_batches) == math.ceil(TRAIN_N / 64)
print(f"first batch loss {history.batch_loss[0]:.3f} (≈ ln 10), mean of the last 20: {np.mean(history.batch_loss[-20:]):.3f}")
print("expected: below 0.9 × the first (quick mode, 32 steps: 0.77×; the full epoch: about 0.05×)")
assert np.mean(history.batch_loss[-20:]) < 0.9 * history.batch_loss[0]   # it learned something, in every mode
if not QUICK:
    print(f"test accuracy {result['accuracy']:.2%}; examples/mnist_train.py (the same data, seeds and steps) "
          "measured 98.16-98.22 % over seeds 0-2 (README); asserting >= 97.5 %")
    assert result["accuracy"] >= 0.975

# %% [markdown]
# ## 3. Inside the trained net
#
# ### 3.1 conv1's filters
#
# The 32 kernels of the first layer, each 3×3, on one diverging scale: red weights respond to bright
# pixels (a digit's stroke is +1 after normalisation, the background −1), blue ones to dark pixels. A
# kernel red on one side and blue on the other is an edge detector across that direction, like the
# Sobel filters of notebook 01 — learned, not designed. With only 3×3 pixels they are coarse.

# %%
plot.filters(net.conv1, ncols=16, title="conv1: 32 learned 3×3 filters")

# %% [markdown]
# ### 3.2 One digit through every layer
#
# Each row is a layer's output for the same test digit (first 8 channels). conv1 and conv2 produce
# signed maps (blue/red); ReLU keeps the positive part; max pooling halves the size. After `Flatten`
# the image becomes a 9216-vector, `fc1` compresses it to 128 features, `fc2` to 10 scores, and
# `log_softmax` turns them into log-probabilities: the highest bar is the prediction. (The dropout
# layers are the identity in eval mode and are left out.)

# %%
digit = prepare_images(test_images[:1])[0]
print("label of this digit:", test_labels[0], "| predicted:", nn.predict(net, digit[None])[0])
plot.feature_maps(net, digit, layers=["conv1", "relu1", "conv2", "relu2", "pool", "fc1", "relu3", "fc2",
                                      "log_softmax"])

# %% [markdown]
# ### 3.3 The confusion matrix
#
# `evaluate` already counted `confusion[true, predicted]`. Rows are the true digits: the diagonal
# holds the right answers, an off-diagonal cell (i, j) counts the i's taken for j's.

# %%
test_x = prepare_images(test_images[:TEST_N])
test_y = test_labels[:TEST_N].astype(np.int64)
proba = nn.training.predict_proba(net, test_x)       # softmax of the outputs, eval mode
predicted = proba.argmax(axis=1)
print("evaluate()['confusion'] equals the counts of predict_proba's argmax:",
      np.array_equal(result["confusion"], np.bincount(test_y * 10 + predicted, minlength=100).reshape(10, 10)))
assert np.array_equal(result["confusion"], np.bincount(test_y * 10 + predicted, minlength=100).reshape(10, 10))
off_diagonal = result["confusion"] - np.diag(np.diag(result["confusion"]))
i, j = np.unravel_index(off_diagonal.argmax(), off_diagonal.shape)
print(f"most frequent confusion: {off_diagonal[i, j]} images of a {i} predicted as {j}")
plot.confusion_matrix(test_y, predicted)

# %% [markdown]
# ### 3.4 The most confident mistakes
#
# Sorting the mistakes by the probability the net gave its wrong answer puts its worst errors
# first. Several of them are digits a person would hesitate over, and some look mislabelled.

# %%
plot.misclassified(test_images[:TEST_N], test_y, predicted, proba, n=16, ncols=8)

# %% [markdown]
# ### 3.5 Train mode vs eval mode: dropout
#
# In training mode `dropout1` zeroes a random 25 % of the pooled conv features and `dropout2` half
# of fc1's 128 units (scaling the survivors by 1/(1−p) so the average is unchanged, docs/formulas.md
# §5). This forces the net not to rely on any single unit. At test time we want the whole network
# and a deterministic answer, so `net.eval()` turns dropout into the identity. On the same images,
# a train-mode pass therefore gives (a) *different* outputs each time and (b) a lower accuracy: each
# pass uses a random, thinned sub-network.

# %%
SAME_N = 500 if QUICK else 2_000
same_x, same_y = test_x[:SAME_N], test_y[:SAME_N]
net.train()
train_mode = [net(same_x) for _ in range(2)]
net.eval()
eval_mode = [net(same_x) for _ in range(2)]
net.train()
accuracy = {name: float(np.mean(out[0].argmax(axis=1) == same_y))
            for name, out in (("train mode", train_mode), ("eval mode", eval_mode))}
print(f"on the same {SAME_N:,} test images: train-mode accuracy {accuracy['train mode']:.2%}, "
      f"eval-mode accuracy {accuracy['eval mode']:.2%}")
print("two train-mode passes give different outputs:", not np.array_equal(*train_mode),
      "| two eval-mode passes identical outputs:", np.array_equal(*eval_mode))
assert not np.array_equal(*train_mode) and np.array_equal(*eval_mode)
print(f"eval mode minus train mode: {100 * (accuracy['eval mode'] - accuracy['train mode']):+.2f} points "
      "(printed, not asserted: its size depends on the seed and the masks drawn)")

# %% [markdown]
# ## 4. Checkpoint and resume, bit for bit
#
# A long run should survive being stopped. `fit(checkpoint=path)` writes, after every epoch, the
# weights, the optimizer's momentum buffers, the history, the state of every random generator
# (dropout masks) and the loader's epoch counter (its shuffle order). `fit(resume=path)` restores
# all of that, so the resumed run takes exactly the steps the uninterrupted one took.
#
# The test, on 512 images: (A) 2 epochs straight; (B) 1 epoch with a checkpoint; then (C) a
# *fresh* model (different random weights), optimizer and loader, resumed from B's checkpoint to
# epoch 2. C must equal A exactly — `np.array_equal`, not "close".

# %%
ckpt_images, ckpt_labels = train_images[subset[:512]], train_labels[subset[:512]]
checkpoint = OUT / "resume_demo.safetensors"


def new_run(init_seed):
    """A fresh model, optimizer and loader; the loader's seed (its shuffle) must match the checkpointed run."""
    nn.manual_seed(init_seed)
    model = nn.models.seed_net()
    return (model, nn.SGD(model.parameters(), lr=0.01, momentum=0.9),
            DataLoader(ckpt_images, ckpt_labels, batch_size=64, shuffle=True, seed=3, transform=prepare_images))


net_a, optimizer_a, loader_a = new_run(init_seed=3)
history_a = nn.fit(net_a, criterion, optimizer_a, loader_a, epochs=2)                          # (A)

net_b, optimizer_b, loader_b = new_run(init_seed=3)
nn.fit(net_b, criterion, optimizer_b, loader_b, epochs=1, checkpoint=checkpoint)            # (B) "stopped" here
del net_b, optimizer_b, loader_b

net_c, optimizer_c, loader_c = new_run(init_seed=99)                                         # (C) other weights
print("before resuming, C's conv1 weights equal A's:", np.array_equal(net_c.conv1.weight.data, net_a.conv1.weight.data))
history_c = nn.fit(net_c, criterion, optimizer_c, loader_c, epochs=2, resume=checkpoint)

same = {name: np.array_equal(p.data, dict(net_c.named_parameters())[name].data) for name, p in net_a.named_parameters()}
print("after resuming, parameters bit-identical to the uninterrupted run:", same)
print("per-batch losses identical:", history_a.batch_loss == history_c.batch_loss,
      f"({len(history_c.batch_loss)} steps)")
assert all(same.values()) and history_a.batch_loss == history_c.batch_loss

# %% [markdown]
# ## 5. Cross-entropy vs MSE
#
# The article's 3.3.3 gives two losses: cross-entropy `L = −Σ t_i log y_i` and the mean squared
# error `L = 1/n Σ (y_i − t_i)²`. For a classifier, `y` is the softmax probabilities and `t` the
# one-hot target. To train with MSE the Net must end in `Softmax` (not `LogSoftmax`), and the loss
# must compare with one-hot rows. Both built from the library's pieces:

# %%
def softmax_seed_net():
    """The seed's Net ending in Softmax: outputs probabilities, for the MSE loss."""
    model = nn.models.seed_net(log_softmax=False)     # ... fc2 (logits)
    model.append(nn.Softmax(dim=1), "softmax")        # ... fc2, softmax
    return model


class OneHotMSELoss:
    """The article's MSE between the probabilities (N, 10) and one-hot targets made from the labels.

    nnscratch's MSELoss averages over all N × 10 elements, as PyTorch's does."""

    def __init__(self, classes=10):
        self.mse, self.one_hot = nn.MSELoss(), np.eye(classes, dtype=np.float32)

    def __call__(self, probabilities, labels):
        return self.mse(probabilities, self.one_hot[labels])

    def backward(self):
        return self.mse.backward()


print(softmax_seed_net().names()[-3:])

# %% [markdown]
# **Why MSE learns slowly: gradient saturation.** Follow the gradient down to the logits `z`.
# With cross-entropy the softmax and the log cancel (docs/formulas.md §6) and
# `∂L/∂z = p − onehot`: when the net gives the true class a tiny probability — it is confidently
# wrong — the gradient is large, about −1 on the true class. With MSE the error `2(p − t)/n` must
# go back through the softmax Jacobian `p_k(δ_kj − p_j)`, which contains a factor `p_true`: when the
# net is confidently wrong, `p_true ≈ 0` and the gradient vanishes exactly when it is most needed.
# The library's layers show it on one example, as the true class's probability grows:

# %%
softmax, log_softmax = nn.Softmax(dim=1), nn.LogSoftmax(dim=1)
mse, nll_one = OneHotMSELoss(), nn.NLLLoss()
label = np.array([0])
print("p(true class)   |∂L/∂z| cross-entropy   |∂L/∂z| MSE")
gradient_norms = []
for p_true in (0.001, 0.01, 0.1, 0.5, 0.9):
    # logits giving the true class probability p_true and the 9 others equal shares
    z = np.log(np.array([[p_true] + [(1 - p_true) / 9] * 9], dtype=np.float64))
    nll_one(log_softmax(z), label)
    ce_grad = log_softmax.backward(nll_one.backward())
    mse(softmax(z), label)
    mse_grad = softmax.backward(mse.backward())
    gradient_norms.append((np.linalg.norm(ce_grad), np.linalg.norm(mse_grad)))
    print(f"{p_true:>13}   {gradient_norms[-1][0]:>21.4f}   {gradient_norms[-1][1]:>10.5f}")
assert gradient_norms[0][0] > 100 * gradient_norms[0][1]    # confidently wrong: MSE's gradient has vanished

# %% [markdown]
# (MSE's gradient is also 10 times smaller overall because `MSELoss` averages over the 10 outputs
# as well as the batch; but that alone a larger learning rate would fix — the factor `p_true` it
# cannot.)
#
# Now both nets, trained the same way: the same 10,000 images (quick mode: 1,000), the same seed
# (so the same initial conv and fc weights), SGD lr 0.01 momentum 0.9, one epoch.

# %%
COMPARE_N = 1_000 if QUICK else 10_000
compare = np.random.default_rng(0).permutation(len(train_labels))[:COMPARE_N]   # COMPARE_N images at random
runs = {}
for name, make_net, loss in (("cross-entropy", nn.models.seed_net, nn.NLLLoss()),
                             ("MSE", softmax_seed_net, OneHotMSELoss())):
    nn.manual_seed(0)
    model = make_net()
    loader = DataLoader(train_images[compare], train_labels[compare], batch_size=64, shuffle=True, seed=0,
                        transform=prepare_images)
    run_history = nn.fit(model, loss, nn.SGD(model.parameters(), lr=0.01, momentum=0.9), loader, epochs=1)
    runs[name] = (run_history, nn.evaluate(model, None, testloader)["accuracy"])
    print(f"{name:>13}: loss {run_history.batch_loss[0]:.4f} -> {np.mean(run_history.batch_loss[-20:]):.4f} "
          f"(first batch -> mean of the last 20), test accuracy {runs[name][1]:.2%}")

# %%
plot.history(runs["cross-entropy"][0], title=f"cross-entropy (NLLLoss on LogSoftmax), {COMPARE_N:,} images")

# %%
plot.history(runs["MSE"][0], title=f"MSE on Softmax probabilities vs one-hot, {COMPARE_N:,} images")

# %% [markdown]
# Mind the y axes: each figure zooms its axis onto its own data, so the MSE curve *looks* like it
# falls. Its values go from 0.091 to 0.089 (MSE of a uniform guess is `(0.9² + 9 · 0.1²)/10 = 0.09`):
# about 2 %, while the cross-entropy falls by about 80 % within the first hundred steps (the
# relative drops are printed below). The MSE net is stuck near its uniform start, where the
# softmax saturates the gradient, and the test accuracies differ accordingly. MSE does get there
# eventually (more epochs, a larger learning rate), which is why it is the loss for regression
# (notebook 02 learned a kernel with it), not for classification.

# %%
first_and_last = {name: (h.batch_loss[0], np.mean(h.batch_loss[-20:])) for name, (h, _) in runs.items()}
relative_drop = {name: 1 - last / first for name, (first, last) in first_and_last.items()}
print("relative drop of the loss over the epoch:", {k: f"{v:.0%}" for k, v in relative_drop.items()})
if not QUICK:
    ce_accuracy, mse_accuracy = runs["cross-entropy"][1], runs["MSE"][1]
    print(f"test accuracy: cross-entropy {ce_accuracy:.2%}, MSE {mse_accuracy:.2%}. Measured over seeds 0-2 "
          "(10,000 images, one epoch): cross-entropy 91.4-92.9 %, MSE 25.3-46.6 %; asserting cross-entropy "
          ">= 89 %, MSE <= 65 % and a gap of at least 25 points")
    assert ce_accuracy >= 0.89 and mse_accuracy <= 0.65 and ce_accuracy - mse_accuracy >= 0.25
    assert relative_drop["cross-entropy"] > relative_drop["MSE"]

# %% [markdown]
# ## Exercises
#
# Each exercise has a check function that says *what* is wrong, and a worked solution in the cell
# below it (replace it with your own and run the check).
#
# ### Exercise 1 — the expected initial loss for C classes
#
# Write `expected_initial_loss(classes)`: the cross-entropy of a network that outputs the uniform
# distribution over `classes` classes. The check compares it with the formula and with a freshly
# initialised `seed_net(num_classes=classes)`.

# %%
def check_expected_initial_loss(expected_initial_loss):
    for classes in (2, 10, 100):
        got = float(expected_initial_loss(classes))
        right = math.log(classes)
        if abs(got - 1 / classes) < 1e-9:
            raise AssertionError(f"C={classes}: you returned the probability 1/C = {got:.4f}; "
                                 "the loss is minus its logarithm")
        if abs(got - math.log10(classes)) < 1e-9 and classes != 1:
            raise AssertionError(f"C={classes}: you used log10 ({got:.4f}); cross-entropy uses the natural log")
        if abs(got + right) < 1e-9:
            raise AssertionError(f"C={classes}: the sign is wrong ({got:.4f}): a loss is -log p, which is positive")
        assert abs(got - right) < 1e-6, f"C={classes}: expected {right:.4f}, got {got:.4f}"
        nn.manual_seed(1)
        fresh = nn.models.seed_net(num_classes=classes)
        measured = nn.NLLLoss()(fresh(prepare_images(train_images[:64])), train_labels[:64] % classes)
        assert abs(measured - got) < 0.1 * got, (
            f"C={classes}: a fresh net measured {measured:.3f}, your formula says {got:.3f}")
        print(f"C={classes:>3}: expected {got:.4f}, a fresh seed_net measures {measured:.4f}")
    print("expected initial loss: correct")


try:   # a wrong answer, to see what the check says
    check_expected_initial_loss(lambda classes: 1 / classes)
except AssertionError as error:
    print("a wrong answer:", error)


def expected_initial_loss(classes):
    return -math.log(1 / classes)          # -log p with p = 1/C: ln C


check_expected_initial_loss(expected_initial_loss)

# %% [markdown]
# ### Exercise 2 — count the parameters by hand
#
# Write `conv2d_parameters(in_channels, out_channels, kernel_size)` and
# `linear_parameters(in_features, out_features)` (weights *and* biases), then use them for the
# seed's conv2 (`Conv2d(32, 64, 3)`) and fc1 (`Linear(9216, 128)`). The check compares with the
# layers themselves and with the `summary` of section 2.1. Where does 9216 come from?

# %%
def check_parameter_counts(conv2d_parameters, linear_parameters):
    model = nn.models.seed_net()
    cases = [("conv1", conv2d_parameters(1, 32, 3)), ("conv2", conv2d_parameters(32, 64, 3)),
             ("fc1", linear_parameters(9216, 128)), ("fc2", linear_parameters(128, 10))]
    for name, got in cases:
        layer = getattr(model, name)
        weights, bias = layer.weight.size, layer.bias.size
        if got == weights:
            raise AssertionError(f"{name}: {got:,} counts the weights only; add the {bias} biases (one per output)")
        if name.startswith("conv") and layer.weight.shape[1] > 1 and got == weights // layer.weight.shape[1] + bias:
            raise AssertionError(f"{name}: {got:,} forgets the input channels: each of the {layer.weight.shape[0]} "
                                 f"kernels is {layer.weight.shape[1]}×3×3, not 3×3")
        assert got == weights + bias, f"{name}: expected {weights + bias:,} parameters, got {got:,}"
        summary_row = next(line for line in nn.transfer.summary(model).splitlines() if line.startswith(name + " "))
        assert f"{got:,}" in summary_row, f"{name}: {got:,} is not in the summary's row {summary_row!r}"
        print(f"{name}: {got:>9,} parameters   summary row: {summary_row}")
    print("parameter counts: correct")


try:   # a wrong answer: weights only
    check_parameter_counts(lambda i, o, k: o * i * k * k, lambda i, o: i * o)
except AssertionError as error:
    print("a wrong answer:", error)


def conv2d_parameters(in_channels, out_channels, kernel_size):
    return out_channels * in_channels * kernel_size * kernel_size + out_channels   # one kernel per (out, in) pair + biases


def linear_parameters(in_features, out_features):
    return in_features * out_features + out_features


# 9216 = 64 channels × 12 × 12: 28 → 26 (conv1, 3×3) → 24 (conv2) → 12 (max-pool 2)
check_parameter_counts(conv2d_parameters, linear_parameters)

# %% [markdown]
# ### Exercise 3 — a run that is broken without raising
#
# `TrainingDivergedError` catches only NaN and infinite losses (section 2.4). Write
# `diagnose(batch_loss, classes=10)` returning one of `"diverged"` (some loss is NaN or infinite),
# `"exploded"` (finite, but some loss exceeds 10 × the initial ln C — the weights were thrown far),
# `"stuck"` (the mean of the last quarter of the steps is not at least 5 % below ln C — nothing was
# learned: every ReLU died, the loss bounces around, or the steps are too small) or `"learning"`.
# Then apply it to the first 12 steps on one fixed batch of 64 images at several learning rates, to
# find the range that trains.

# %%
def check_diagnose(diagnose):
    ln10 = math.log(10)
    cases = [   # (expected diagnosis, per-batch losses), shaped like real runs of section 2.4
        ("learning", [2.31, 2.1, 1.7, 1.2, 0.9, 0.6, 0.5, 0.4]),
        ("diverged", [2.31, 150.0, 1e9, float("nan")]),
        ("diverged", [2.31, float("inf")]),
        ("exploded", [2.31, 119.9, 3e4, 286.8, 13.2, 2.9, 2.5, 2.4]),
        ("stuck", [2.31, 3.4, 2.5, 2.29, 2.35, 2.31, 2.30, 2.31]),
        ("stuck", [2.31, 2.57, 2.36, 2.3, 2.15, 5.25, 2.66, 2.38, 2.35, 2.32, 2.27, 7.0]),
    ]
    for expected, losses in cases:
        got = diagnose(losses)
        if expected == "diverged" and got != "diverged":
            raise AssertionError(f"{losses}: a NaN or infinite loss must give 'diverged', got {got!r} "
                                 "(NaN compares False with everything: use math.isfinite)")
        if expected == "exploded" and got == "learning":
            raise AssertionError(f"{losses}: the loss went above 10 × ln 10 = {10 * ln10:.1f} on the way; "
                                 "ending low does not make that run healthy: expected 'exploded'")
        if expected == "stuck" and got == "learning":
            raise AssertionError(f"{losses}: the last quarter averages {np.mean(losses[-max(1, len(losses) // 4):]):.2f}, "
                                 f"not 5 % below ln 10 = {ln10:.2f}: expected 'stuck'")
        assert got == expected, f"{losses}: expected {expected!r}, got {got!r}"
    print("diagnose: correct on the", len(cases), "test runs")


try:   # a wrong answer: only what fit itself checks
    check_diagnose(lambda losses, classes=10: "diverged" if not all(map(math.isfinite, losses)) else "learning")
except AssertionError as error:
    print("a wrong answer:", error)


def diagnose(batch_loss, classes=10):
    start = math.log(classes)
    if not all(math.isfinite(loss) for loss in batch_loss):
        return "diverged"
    if max(batch_loss) > 10 * start:
        return "exploded"
    last_quarter = batch_loss[-max(1, len(batch_loss) // 4):]
    if np.mean(last_quarter) > 0.95 * start:
        return "stuck"
    return "learning"


check_diagnose(diagnose)

# %%
scan_x, scan_y = prepare_images(train_images[:64]), train_labels[:64]
diagnoses = {}
with np.errstate(over="ignore", invalid="ignore"):
    for lr in (0.001, 0.01, 0.1, 1.0, 10.0):
        nn.manual_seed(0)
        model = nn.models.seed_net()
        sgd = nn.SGD(model.parameters(), lr=lr, momentum=0.9)
        scan_losses = []
        for step in range(12):
            loss = criterion(model(scan_x), scan_y)
            scan_losses.append(loss.item())
            if not math.isfinite(loss):
                break
            sgd.zero_grad()
            model.backward(criterion.backward())
            sgd.step()
        diagnoses[lr] = diagnose(scan_losses)
        print(f"lr {lr:>6g}: {diagnoses[lr]:>9}   losses {np.array2string(np.array(scan_losses), precision=2)}")
print("expected: 0.01 (the article's) and 0.1 learning; 0.001 too slow to leave ln 10 in 12 steps; "
      "1 bouncing or exploding; 10 thrown to NaN")
assert diagnoses[0.01] == diagnoses[0.1] == "learning"
assert diagnoses[1.0] != "learning" and diagnoses[10.0] in ("exploded", "diverged")
