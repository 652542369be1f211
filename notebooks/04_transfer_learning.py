# %% [markdown]
# # 04 — Transfer learning three ways
#
# The seed article (its section 2.3, summarized in [docs/seed.md](../docs/seed.md)) names three ways of
# reusing a convolutional network trained on one task for another: **pre-training** (train on a large
# task and keep the weights), **fine-tuning** (load them, replace what does not fit the new task, train
# on) and **feature extraction** (keep the pre-trained layers fixed and learn only on top of their
# outputs). This notebook does all three on MNIST: a small convnet learns the digits **0–4** (task A,
# the "large data set"), then serves the digits **5–9** (task B, relabelled 0–4).
#
# **Goals.** By the end you can
# - save a trained network to a weight file and rebuild it from the file alone;
# - replace its output layer, freeze its body, and *prove* that training left the frozen part untouched;
# - see why an optimizer built before `replace_head` is a bug, and what nnscratch says about it;
# - train a head on cached features, and know why that is the same computation as training through a
#   frozen body, only faster;
# - fine-tune with a smaller learning rate for the pre-trained layers, and say why;
# - measure when transfer helps: three strategies at 10 and 100 labels per class, over several seeds;
# - move weights to and from PyTorch.
#
# **Runtime on 2 cores** (measured 2026-12-01, kernel start included): 47 s in full mode (10 minutes
# were measured on a machine shared with five other jobs); 4 s in quick mode (`NNSCRATCH_QUICK=1`).
#
# **Prerequisites:** notebook 03 (training the seed's Net: `fit`, `evaluate`, dropout in train and eval
# mode). The formulas are in [docs/formulas.md](../docs/formulas.md); the same study as a script, with
# more label budgets, is `examples/mnist_transfer.py` (its results are in the README).

# %%
import nnscratch as nn
from nnscratch import notebook
session = notebook.start("04 — Transfer learning three ways")
QUICK, OUT = session.quick, session.out

# %%
import time

import numpy as np

from nnscratch import plot, transfer
from nnscratch.data import DataLoader, load_mnist, per_class_subset, prepare_images, subset_by_labels
from nnscratch.models import keras_transfer_net

# %% [markdown]
# ## The two tasks
#
# `subset_by_labels` keeps the images of some digits and, by default, relabels them `0..k-1`: for task B
# the label 0 means "5", 1 means "6", and so on. Task B is the *new* task: its classes were never seen in
# pre-training, so the old output layer (which means "0".."4") is useless for it, but the strokes, loops
# and corners the convolutions learned on 0–4 are what 5–9 are made of too.
#
# In quick mode everything below runs on a few hundred images: the code paths are the same, the
# accuracies mean nothing.

# %%
(train_images, train_labels), (test_images, test_labels) = load_mnist()
train_a = subset_by_labels(train_images, train_labels, [0, 1, 2, 3, 4])   # task A: digits 0-4
test_a = subset_by_labels(test_images, test_labels, [0, 1, 2, 3, 4])
train_b = subset_by_labels(train_images, train_labels, [5, 6, 7, 8, 9])   # task B: digits 5-9 -> labels 0-4
test_b = subset_by_labels(test_images, test_labels, [5, 6, 7, 8, 9])


def first(pair, n):
    """The first n samples of an (images, labels) pair (all of them if n is None)."""
    return pair if n is None else (pair[0][:n], pair[1][:n])


if QUICK:
    train_a, test_a, test_b = first(train_a, 320), first(test_a, 200), first(test_b, 200)
print(f"task A (digits 0-4): {len(train_a[1]):,} training and {len(test_a[1]):,} test images")
print(f"task B (digits 5-9): {len(train_b[1]):,} training and {len(test_b[1]):,} test images; "
      f"labels {sorted(set(test_b[1].tolist()))} stand for the digits 5-9")


def accuracy(model, images, labels, transform=prepare_images):
    """Test accuracy in eval mode (dropout off), 500 images per forward pass."""
    return nn.evaluate(model, None, DataLoader(images, labels, batch_size=500, transform=transform))["accuracy"]


# %% [markdown]
# ## 1. Pre-training on the digits 0–4
#
# The network is `models.keras_transfer_net`, the convnet of Keras's `mnist_transfer_cnn` example:
# the seed's Net (article 4.2) with 32 instead of 64 channels in `conv2`, so about four times cheaper,
# which lets this notebook train some twenty networks in a few minutes. It outputs logits, so the loss is
# `CrossEntropyLoss` (log-softmax and NLL in one, docs/formulas.md §6). The optimizer is the seed's: SGD with
# momentum 0.9 (article 4.3), here at learning rate 0.05 with batches of 128.
#
# One epoch over the 30,596 images of task A is enough to pass 99 % on its test set (about 30 s of
# training on 2 idle cores).

# %%
nn.manual_seed(0)
pretrained = keras_transfer_net(num_classes=5)
optimizer = nn.SGD(pretrained.parameters(), lr=0.05, momentum=0.9)
loader_a = DataLoader(*train_a, batch_size=32 if QUICK else 128, shuffle=True, seed=0, transform=prepare_images)
history_a = nn.fit(pretrained, nn.CrossEntropyLoss(), optimizer, loader_a, epochs=1, log_every=None)
pretrain_accuracy = accuracy(pretrained, *test_a)
print(f"{len(history_a.batch_loss)} steps in {history_a.total_time:.0f} s; "
      f"test accuracy on digits 0-4: {pretrain_accuracy:.2%}")
plot.history(history_a)

# %% [markdown]
# The loss of every step (thin line) falls from ln 5 ≈ 1.6 (five equally likely classes) to below
# 0.1. The first layer has learned small edge and blob detectors, the kind of feature any digit
# needs:

# %%
plot.filters(pretrained.conv1, title="conv1 after pre-training on digits 0-4")

# %%
# Measured 99.40 %, 99.40 %, 99.34 % over pre-training seeds 0-2 (one epoch); asserting >= 99.0 %.
print(f"pre-trained test accuracy on 0-4: {pretrain_accuracy:.2%} (expect ~99.4 % in full mode)")
if not QUICK:
    assert pretrain_accuracy >= 0.99, f"pre-training reached only {pretrain_accuracy:.2%}"

# %% [markdown]
# ## 2. Weight files
#
# `transfer.save_weights` writes a [safetensors](https://github.com/huggingface/safetensors) file: a JSON
# header, then the raw bytes of every array. Unlike `pickle` (and so `torch.save`), it *cannot carry
# code*: loading a weight file found on the internet can fail, but it cannot run anything. The header
# records the architecture (every layer's class and hyper-parameters), so `transfer.load_model` rebuilds
# the network from the file alone, without the code that built it.

# %%
weights_path = OUT / "pretrained_0-4.safetensors"
transfer.save_weights(pretrained, weights_path, input_shape=(1, 28, 28),
                      metadata={"task": "MNIST digits 0-4", "epochs": 1, "lr": 0.05, "momentum": 0.9,
                                "seed": 0, "quick": QUICK, "test_accuracy": pretrain_accuracy})
print(f"{weights_path.name}: {weights_path.stat().st_size / 1024:.0f} KiB")

_, header = nn.serialization.load_file(weights_path)   # what the file says about itself
for key, value in header.items():
    if key != "architecture":
        print(f"  {key}: {value}")
print("  architecture:")
for layer in header["architecture"]:
    print(f"    {layer['name']:9} {layer['class']:10} {layer['args']}")

# %%
reloaded = transfer.load_model(weights_path)
saved, loaded = pretrained.state_dict(), reloaded.state_dict()
same = [name for name in saved if np.array_equal(saved[name], loaded[name]) and saved[name].dtype == loaded[name].dtype]
x_check = prepare_images(test_b[0][:64])
with pretrained.eval_mode(), reloaded.eval_mode():
    output_gap = float(np.max(np.abs(pretrained(x_check) - reloaded(x_check))))
print(f"parameters equal after the round trip: {len(same)} of {len(saved)} (expect all {len(saved)}, bit for bit)")
print(f"largest output difference on 64 images: {output_gap} (expect exactly 0.0)")
assert list(loaded) == list(saved) and len(same) == len(saved), f"differ: {sorted(set(saved) - set(same))}"
assert output_gap == 0.0

# %% [markdown]
# ## 3. A new head, a frozen body — and proof that it stayed frozen
#
# For task B the pre-trained output layer `fc2` (5 outputs meaning "0".."4") is replaced by a fresh one
# (5 outputs meaning "5".."9"): `transfer.replace_head` swaps the last `Dense` layer for a new, randomly
# initialized one of the same input size. Then `transfer.freeze` sets `requires_grad = False` on the
# convolutions: their gradients are not computed, SGD skips them, and backward stops below `fc1`.
#
# `transfer.summary` shows the set-up before any training: what is frozen, what the optimizer holds, and
# at which learning rate. Build the optimizer *after* the surgery, from the trainable parameters.

# %%
nn.manual_seed(1)
model = transfer.load_model(weights_path)
transfer.replace_head(model, num_classes=5)
transfer.freeze(model, ["conv1", "conv2"])
optimizer = nn.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
print(transfer.summary(model, optimizer))

# %% [markdown]
# `frozen_snapshot` copies every frozen parameter; after training, `assert_frozen_unchanged` compares
# their bytes (so even a change of one bit, or `-0.0` for `0.0`, would count). We train the head for two
# epochs on 100 labelled images per class of task B, and check both directions: the frozen part did not
# move, and the trainable part did (otherwise the check would prove nothing).

# %%
labelled_b = per_class_subset(*train_b, 10 if QUICK else 100, seed=0)
loader_b = DataLoader(*labelled_b, batch_size=64, shuffle=True, seed=1, transform=prepare_images)
snapshot = transfer.frozen_snapshot(model)
head_before = {name: p.data.copy() for name, p in model.named_parameters() if p.requires_grad}
nn.fit(model, nn.CrossEntropyLoss(), optimizer, loader_b, epochs=2, log_every=None)

transfer.assert_frozen_unchanged(model, snapshot)   # raises AssertionError naming any changed parameter
params = dict(model.named_parameters())
moved = {name: float(np.max(np.abs(params[name].data - before))) for name, before in head_before.items()}
print(f"frozen parameters, bit-identical after training: {list(snapshot)}")
print("largest change of each trainable parameter (expect > 0):",
      ", ".join(f"{name} {change:.3g}" for name, change in moved.items()))
assert list(snapshot) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
assert all(change > 0 for change in moved.values()), moved

# %% [markdown]
# ### The trap: an optimizer built before `replace_head`
#
# `replace_head` puts *new* `Parameter` objects in the model. An optimizer built before it still holds
# the old head's parameters: the new head would get gradients at every step and never be updated, while
# the loss creeps down a little through the other layers — nothing looks broken, the head just stays
# random. `fit` checks that every trainable parameter of the model is in the optimizer and stops with
# advice instead:

# %%
nn.manual_seed(2)
trap = transfer.load_model(weights_path)
early_optimizer = nn.SGD(trap.parameters(), lr=0.05, momentum=0.9)   # built too early...
transfer.replace_head(trap, num_classes=5)                             # ...the head is now a new layer
try:
    nn.fit(trap, nn.CrossEntropyLoss(), early_optimizer, loader_b, epochs=1, log_every=None)
    trap_message = None
except ValueError as error:
    trap_message = str(error)
print("fit said:", trap_message)
assert trap_message is not None and "replace_head" in trap_message, "fit trained a head its optimizer does not hold"

# %% [markdown]
# The fix is the order: `replace_head` (and `freeze`), *then* `nn.SGD(...)`. `transfer.summary(model,
# optimizer)` also lists trainable parameters the optimizer lacks.
#
# ## 4. Feature extraction: cached features versus the frozen body
#
# While the body is frozen, its output for a given image never changes. So instead of running `conv1`,
# `conv2` and the pooling for every image at every epoch, run them **once** and keep the result:
# `transfer.extract_features(model, images, before="dropout1")` returns what feeds `dropout1` — the
# max-pool output, 32 × 12 × 12 = 4,608 numbers per image. (`before` names the first layer *not* run.)
# Then train only the rest of the network, `model["dropout1":]`, on those arrays.
#
# Is that really the same training? Everything before `dropout1` is deterministic (convolution, ReLU,
# max-pool: no dropout, same in train and eval mode), so the cached features are exactly what the frozen
# body would produce at every step. The first cell checks that, bit for bit.

# %%
speed_n = 256 if QUICK else 2000
speed_images, speed_labels = train_b[0][:speed_n], train_b[1][:speed_n]
probe = transfer.load_model(weights_path)
features = transfer.extract_features(probe, prepare_images(speed_images), before="dropout1")
body = transfer.cut(probe, before="dropout1")         # the same layers, shared, as a model of its own
body_output = body(prepare_images(speed_images[:128]))  # training mode: what fit's forward pass computes
print(f"features: {features.shape} ({features.nbytes / 2**20:.1f} MiB for {speed_n} images)")
print(f"largest |cached - frozen body output| on 128 images: {np.max(np.abs(features[:128] - body_output))} "
      f"(expect exactly 0.0)")
assert features.shape == (speed_n, 32, 12, 12)
assert np.array_equal(features[:128], body_output)

# %% [markdown]
# Now the same head training two ways, with the same number of steps (one epoch at batch 128), the same
# initial head (`nn.manual_seed(3)` before `replace_head`), the same shuffled batches (`DataLoader(seed=3)`)
# and the same dropout masks (drawn from the library generator, in the same order): once through the
# whole model with its frozen body, once through `model["dropout1":]` on the cached features.

# %%
def head_training(on_cached_features):
    """One epoch of training fc1 and a new fc2 on task B, the body frozen; returns (model, seconds)."""
    nn.manual_seed(3)
    net = transfer.load_model(weights_path)
    transfer.replace_head(net, num_classes=5)
    transfer.freeze(net, ["conv1", "conv2"])
    opt = nn.SGD([p for p in net.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    if on_cached_features:
        trained, loader = net["dropout1":], DataLoader(features, speed_labels, batch_size=128, shuffle=True, seed=3)
    else:
        trained, loader = net, DataLoader(speed_images, speed_labels, batch_size=128, shuffle=True, seed=3,
                                          transform=prepare_images)
    started = time.perf_counter()
    nn.fit(trained, nn.CrossEntropyLoss(), opt, loader, epochs=1, log_every=None)
    return net, time.perf_counter() - started


through_body, body_seconds = head_training(on_cached_features=False)
on_cache, cache_seconds = head_training(on_cached_features=True)
print(f"{-(-speed_n // 128)} steps: {body_seconds:.2f} s through the frozen body, {cache_seconds:.2f} s on cached "
      f"features -> {body_seconds / cache_seconds:.1f}x faster (timings vary from run to run)")

# %%
a, b = through_body.state_dict(), on_cache.state_dict()
differing = [name for name in a if not np.array_equal(a[name], b[name])]
print(f"parameters that differ between the two trainings: {differing} (expect none: bit-identical)")
assert not differing

# %% [markdown]
# Bit-identical, not merely close: each step multiplies the same numbers in the same order (the kernels
# cut their work by the shapes, never by timing or thread count), so the two runs cannot drift apart.
# The only difference is that the first one recomputed the convolutions at every step. The measured
# speed-up depends on the machine and its load (`examples/mnist_transfer.py` measures 4.5–6.9× on idle
# cores); the caching itself costs one forward pass, paid once for every epoch and every run that follows.
#
# ## 5. Fine-tuning with discriminative learning rates
#
# Fine-tuning trains the pre-trained layers too, but *gently*. `transfer.param_groups` splits the
# parameters into a **head** group, by default the layer `replace_head` replaced (`fc2`), at `lr`, and a
# **body** group, everything else, at `body_lr`. Why about ten times lower for the body?
#
# - The body's weights were fitted on 30,000 images; task B offers a few hundred. A full-size step,
#   driven by a gradient estimated from 64 images, would overwrite general features with noise from
#   a small sample (and overfit it).
# - At the start the head is random, so the gradients flowing back into the body are large and
#   meaningless. The body should only follow slowly once the head makes sense.
#
# `transfer.fine_tune` does the usual two phases with one optimizer: the body frozen while the new head
# learns (`head_epochs`), then everything at its own rate (`full_epochs`).

# %%
nn.manual_seed(4)
model_ft = transfer.load_model(weights_path)
transfer.replace_head(model_ft, num_classes=5)
groups = transfer.param_groups(model_ft, lr=0.05, body_lr=0.005)
names = {id(p): name for name, p in model_ft.named_parameters()}
for group in groups:
    print(f"{group['name']:4} lr {group['lr']:<6} {[names[id(p)] for p in group['params']]}")
assert [names[id(p)] for p in groups[1]["params"]] == ["fc2.weight", "fc2.bias"]

pretrained_body = {name: p.data.copy() for name, p in model_ft.named_parameters()}
loader_ft = DataLoader(*labelled_b, batch_size=64, shuffle=True, seed=4, transform=prepare_images)
history_ft = transfer.fine_tune(model_ft, nn.CrossEntropyLoss(), loader_ft, head_epochs=3, full_epochs=3,
                                lr=0.05, body_lr=0.005)
ft_accuracy = accuracy(model_ft, *test_b)
print(f"fine-tuned on {len(labelled_b[1])} images of 5-9 in {history_ft.total_time:.1f} s: "
      f"test accuracy {ft_accuracy:.2%}")
plot.history(history_ft)

# %%
params = dict(model_ft.named_parameters())
relative = {name: float(np.linalg.norm(params[name].data - before) / np.linalg.norm(before))
            for name, before in pretrained_body.items() if name.endswith("weight")}
print("relative change of each weight, |w - w0| / |w0|:", ", ".join(f"{n} {v:.2g}" for n, v in relative.items()))
print(f"epochs in the history: {history_ft.epochs} (expect 3 + 3), steps: {len(history_ft.batch_loss)} "
      f"(expect {sum(history_ft.epoch_batches)}); trainable afterwards: {len(transfer.trainable_parameters(model_ft))} "
      f"of {len(params)} parameters (expect all)")
assert history_ft.epochs == 6 and len(history_ft.batch_loss) == sum(history_ft.epoch_batches)
assert transfer.frozen_parameters(model_ft) == []
assert relative["conv1.weight"] > 0 and relative["conv2.weight"] > 0, "phase 2 did not train the body"

# %% [markdown]
# The curve shows the two phases. For three epochs only `fc2` learns, on top of `fc1`'s 128 features,
# which were made for the digits 0–4: the loss levels off. Once the body may move (epoch 4 on), it drops
# again. The convolutions moved by a few hundredths of their size; the new head, which started from
# random values with the larger learning rate, changed completely.
#
# ## 6. When does transfer help? A from-scratch control
#
# The honest test of transfer is a **control**: the same network, randomly initialized, trained on the
# same few labelled images of task B. Three strategies, each at 10 and 100 labelled images per class
# (`per_class_subset` draws them, class-balanced, from a seed), each tested on the whole 5–9 test set:
#
# - **from scratch**: `keras_transfer_net` with random weights;
# - **feature extraction**: the pre-trained convolutions frozen, `fc1` and a new `fc2` trained on cached
#   features;
# - **fine-tuning**: continue from the feature-extraction model (its head already fitted: that was phase
#   1), unfreeze everything, train with the body at a tenth of the head's learning rate.
#
# Training length is counted in steps, not epochs (an epoch of 50 images is one batch): small budgets are
# seen many times. The learning rate drops tenfold for the last quarter. The step counts are those of
# `examples/mnist_transfer.py`. Each (budget, seed) draws its own subset, and each strategy sees the same one.

# %%
BUDGETS = [10, 20] if QUICK else [10, 100]
SEEDS = [0] if QUICK else [0, 1, 2]
STEPS = ({"scratch": 4, "feature extraction": 8, "fine-tuning": 3} if QUICK else
         {"scratch": {10: 60, 100: 100}, "feature extraction": {10: 100, 100: 200}, "fine-tuning": {10: 30, 100: 50}})


def steps_for(strategy, per_class):
    return STEPS[strategy] if QUICK else STEPS[strategy][per_class]


def train_steps(model, optimizer, inputs, labels, steps, batch_size, seed, transform=None):
    """fit() for about `steps` mini-batch steps (whole epochs); the learning rate / 10 for the last quarter."""
    loader = DataLoader(inputs, labels, batch_size=min(batch_size, len(labels)), shuffle=True, seed=seed,
                        transform=transform)
    epochs = max(1, round(steps / len(loader)))

    def drop_lr(epoch, history):
        if epoch == round(0.75 * epochs):
            for group in optimizer.param_groups:
                group["lr"] *= 0.1

    nn.fit(model, nn.CrossEntropyLoss(), optimizer, loader, epochs, callback=drop_lr, log_every=None)


extractor = transfer.load_model(weights_path)
test_features = transfer.extract_features(extractor, prepare_images(test_b[0]), before="dropout1", batch_size=500)
results = {strategy: {n: [] for n in BUDGETS} for strategy in ("from scratch", "feature extraction", "fine-tuning")}
started = time.perf_counter()
for per_class in BUDGETS:
    for seed in SEEDS:
        index, _ = per_class_subset(np.arange(len(train_b[1])), train_b[1], per_class, seed=seed)
        images, labels = train_b[0][index], train_b[1][index]
        run_seed = 10_000 * seed + per_class

        # (a) from scratch
        nn.manual_seed(run_seed)
        scratch = keras_transfer_net(num_classes=5)
        train_steps(scratch, nn.SGD(scratch.parameters(), lr=0.02, momentum=0.9), images, labels,
                    steps_for("scratch", per_class), 64, run_seed, prepare_images)
        results["from scratch"][per_class].append(accuracy(scratch, *test_b))

        # (b) feature extraction: frozen body, fc1 + new fc2 trained on cached features
        nn.manual_seed(run_seed)
        model = transfer.load_model(weights_path)
        transfer.replace_head(model, num_classes=5)
        transfer.freeze(model, ["conv1", "conv2"])
        snapshot = transfer.frozen_snapshot(model)
        cached = transfer.extract_features(model, prepare_images(images), before="dropout1")
        head = model["dropout1":]
        train_steps(head, nn.SGD([p for p in head.parameters() if p.requires_grad], lr=0.05, momentum=0.9),
                    cached, labels, steps_for("feature extraction", per_class), 128, run_seed)
        transfer.assert_frozen_unchanged(model, snapshot)
        results["feature extraction"][per_class].append(accuracy(head, test_features, test_b[1], transform=None))

        # (c) fine-tuning: continue from (b), everything trainable, the body at lr / 10
        transfer.unfreeze(model)
        groups = transfer.param_groups(model, lr=0.01, body_lr=0.001, head=["fc1", "fc2"])
        train_steps(model, nn.SGD(groups, lr=0.01, momentum=0.9), images, labels,
                    steps_for("fine-tuning", per_class), 64, run_seed, prepare_images)
        results["fine-tuning"][per_class].append(accuracy(model, *test_b))

        print(f"{per_class:3} labels/class, seed {seed}: " + ", ".join(
            f"{strategy} {results[strategy][per_class][-1]:.2%}" for strategy in results))
print(f"{len(BUDGETS) * len(SEEDS) * 3} trainings in {time.perf_counter() - started:.0f} s")

# %% [markdown]
# In (b) the head is evaluated on cached *test* features too: the same outputs the whole model would
# give on the test images (section 4 showed the features are exact), without running the body again.
# Note the `head=["fc1", "fc2"]` in (c): here `fc1` was trained in phase (b) along with `fc2`, so both
# belong to the head; the default would put `fc1` in the body.

# %%
curves = {strategy: [results[strategy][n] for n in BUDGETS] for strategy in results}  # one list of seeds per budget
plot.accuracy_vs_labels(BUDGETS, curves, title="Digits 0-4 -> 5-9: test accuracy (mean ± sd over seeds)")

# %%
gain = {n: [max(fe, ft) - s for s, fe, ft in zip(results["from scratch"][n], results["feature extraction"][n],
                                                  results["fine-tuning"][n])] for n in BUDGETS}
for n in BUDGETS:
    print(f"{n:3} labels/class: best transfer minus scratch, per seed: "
          + ", ".join(f"{100 * g:+.1f}" for g in gain[n]) + " points")
# Measured over seeds 0-2: +6.4, +5.7, +5.5 points at 10 labels/class and +3.5, +2.9, +2.9 at 100
# (the README's script, on other subsets: +5.5 and +3.0 on average). Asserting, in every seed: >= +3 points at
# 10 labels/class, >= +1.5 at 100.
print("expect about +5 to +6 points at 10 labels/class, +3 at 100 (full mode)")
if not QUICK:
    assert min(gain[10]) >= 0.03, f"transfer beat scratch at 10 labels/class by only {100 * min(gain[10]):.1f} points"
    assert min(gain[100]) >= 0.015, f"transfer beat scratch at 100 labels/class by only {100 * min(gain[100]):.1f} points"

# %% [markdown]
# Transfer helps most when labels are scarce: at 10 images per class the pre-trained convolutions are
# worth several points; with more labels the scratch network learns its own features and the gap shrinks
# (the README's table shows it almost closed with all ~5,900 images per class). Fine-tuning adds little
# over feature extraction at these budgets: with so few images, the pre-trained body is already better
# than what 50 or 500 images could teach it.
#
# ## 7. To PyTorch and back
#
# nnscratch layers use PyTorch's names and weight layouts (`conv1.weight` is `(out, in, kH, kW)`,
# `fc1.weight` is `(out_features, in_features)`). `transfer.to_torch_state_dict` gives a dict of NumPy
# arrays that `torch.from_numpy` turns into a `state_dict`; `transfer.from_torch_state_dict` loads a
# PyTorch `state_dict` (tensors or arrays) into an nnscratch model and returns a report of what it loaded.
# The NumPy half always runs:

# %%
state = transfer.to_torch_state_dict(model_ft)
print({name: array.shape for name, array in state.items()})
nn.manual_seed(5)
copy = keras_transfer_net(num_classes=5)
report = transfer.from_torch_state_dict(copy, state)
print(report)
with model_ft.eval_mode(), copy.eval_mode():
    gap = float(np.max(np.abs(model_ft(x_check) - copy(x_check))))
print(f"largest output difference after the round trip: {gap} (expect exactly 0.0)")
assert report.ok and len(report.loaded) == len(state) and gap == 0.0

# %% [markdown]
# With PyTorch installed, the same weights load into the same network written in PyTorch, and both give
# the same outputs. PyTorch is never a dependency of nnscratch; this cell skips itself without it.

# %%
try:
    import torch
except ImportError:
    torch = None

if torch is None:
    print("torch is not installed: the PyTorch comparison is skipped (the NumPy round trip above ran)")
else:
    from collections import OrderedDict
    tnet = torch.nn.Sequential(OrderedDict([   # keras_transfer_net in PyTorch, with the same layer names
        ("conv1", torch.nn.Conv2d(1, 32, 3)), ("relu1", torch.nn.ReLU()),
        ("conv2", torch.nn.Conv2d(32, 32, 3)), ("relu2", torch.nn.ReLU()),
        ("pool", torch.nn.MaxPool2d(2)), ("dropout1", torch.nn.Dropout(0.25)), ("flatten", torch.nn.Flatten(1)),
        ("fc1", torch.nn.Linear(32 * 12 * 12, 128)), ("relu3", torch.nn.ReLU()), ("dropout2", torch.nn.Dropout(0.5)),
        ("fc2", torch.nn.Linear(128, 5)),
    ]))
    tnet.load_state_dict({name: torch.from_numpy(array) for name, array in state.items()})
    tnet.eval()
    with torch.no_grad():
        torch_out = tnet(torch.from_numpy(x_check)).numpy()
    with model_ft.eval_mode():
        ours = model_ft(x_check)
    rel = float(np.max(np.abs(ours - torch_out)) / np.max(np.abs(torch_out)))
    print(f"relative difference nnscratch vs PyTorch: {rel:.2e} (expect ~1e-7 in float32)")
    assert rel < 1e-5
    back = keras_transfer_net(num_classes=5)
    assert transfer.from_torch_state_dict(back, tnet.state_dict()).ok

# %% [markdown]
# **Checking a network of your own against PyTorch.** Install the CPU wheel in your environment
# (`pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu`; never add it to
# nnscratch's dependencies), then:
#
# 1. write the same network in PyTorch with the *same layer names* (a `torch.nn.Sequential` of an
#    `OrderedDict`, as above, or attributes named like the nnscratch layers);
# 2. copy the weights across with `to_torch_state_dict` (or the other way with `from_torch_state_dict`);
#    a `LoadReport` that is not `.ok` lists every name or shape that does not match;
# 3. put both in eval mode (dropout draws different masks in the two libraries) and compare outputs on
#    the same batch: expect a relative difference around 1e-7 in float32, 1e-15 after `.double()` on
#    both sides;
# 4. compare gradients: one `loss.backward()` in PyTorch, `model.backward(criterion.backward())` in
#    nnscratch, then each parameter's `.grad`. `tests/test_seed_net.py` does exactly this for the seed's
#    Net (and one SGD step), skipped when torch is absent.
#
# ## Exercises
#
# Each exercise has a check function that says *what* is wrong, and a worked solution so the notebook
# runs top to bottom. Try your own answer in place of the solution first.
#
# ### Exercise 1 — what does `freeze_to` freeze?
#
# `transfer.freeze_to(model, "fc1")` freezes every layer before `fc1` and unfreezes `fc1` and everything
# after it. Without running it, list the names of the **frozen parameters** of `keras_transfer_net` after
# that call, in model order.

# %%
def check_frozen_after_freeze_to(answer, boundary="fc1"):
    """Compare a list of parameter names with what freeze_to(model, boundary) actually freezes."""
    net = transfer.freeze_to(keras_transfer_net(), boundary)
    truth = transfer.frozen_parameters(net)
    answer = list(answer)
    missing = [name for name in truth if name not in answer]
    extra = [name for name in answer if name not in truth]
    assert not missing, f"these are frozen too: {missing} (freeze_to freezes every layer before {boundary!r})"
    assert not extra, (f"these stay trainable: {extra} ({boundary!r} and the layers after it are unfrozen; "
                       f"layers without parameters, like ReLU or pool, have nothing to freeze)")
    assert answer == truth, f"right names, wrong order: the model order is {truth}"
    print(f"correct: {answer}")


try:
    check_frozen_after_freeze_to(["conv1.weight", "conv1.bias"])   # a wrong answer, to see the message
except AssertionError as wrong:
    print("a wrong answer gets:", wrong)

# Solution: everything before fc1 that has parameters, i.e. the two convolutions.
frozen_answer = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
check_frozen_after_freeze_to(frozen_answer)

# %% [markdown]
# ### Exercise 2 — parameter groups by hand
#
# Write `my_param_groups(model, lr, body_lr)` returning SGD's two groups,
# `[{"name": "body", "params": [...], "lr": body_lr}, {"name": "head", "params": [...], "lr": lr}]`,
# where the head is `fc2` and the body is every other parameter, in model order. Use
# `model.named_parameters()`.

# %%
def check_param_groups(fn):
    """Compare fn(model, lr=0.01, body_lr=0.001) with transfer.param_groups, parameter by parameter."""
    net = keras_transfer_net()
    mine, truth = fn(net, lr=0.01, body_lr=0.001), transfer.param_groups(net, lr=0.01, body_lr=0.001)
    names = {id(p): name for name, p in net.named_parameters()}
    assert isinstance(mine, list) and len(mine) == 2, f"expected a list of two groups, got {type(mine).__name__} " \
        f"of length {len(mine) if hasattr(mine, '__len__') else '?'}"
    for got, want in zip(mine, truth):
        assert got.get("name") == want["name"], f"group order: expected {want['name']!r}, got {got.get('name')!r}"
        assert got.get("lr") == want["lr"], f"group {want['name']!r}: lr should be {want['lr']}, got {got.get('lr')}"
        got_names = [names.get(id(p), "<not a parameter of the model>") for p in got.get("params", [])]
        want_names = [names[id(p)] for p in want["params"]]
        assert got_names == want_names, (f"group {want['name']!r} should hold {want_names}, got {got_names} "
                                         "(the objects themselves, not copies or arrays)")
    print("correct: same groups, same parameters, same learning rates as transfer.param_groups")


def wrong_param_groups(model, lr, body_lr):   # a classic slip: the rates swapped
    params = list(model.named_parameters())
    return [{"name": "body", "params": [p for n, p in params if not n.startswith("fc2.")], "lr": lr},
            {"name": "head", "params": [p for n, p in params if n.startswith("fc2.")], "lr": body_lr}]


try:
    check_param_groups(wrong_param_groups)
except AssertionError as wrong:
    print("a wrong answer gets:", wrong)


# Solution
def my_param_groups(model, lr, body_lr):
    params = list(model.named_parameters())
    in_head = lambda name: name.split(".")[0] == "fc2"  # noqa: E731 - the layer name is before the dot
    return [{"name": "body", "params": [p for n, p in params if not in_head(n)], "lr": body_lr},
            {"name": "head", "params": [p for n, p in params if in_head(n)], "lr": lr}]


check_param_groups(my_param_groups)

# %% [markdown]
# ### Exercise 3 — the shape of the features at a cut point
#
# For one 28 × 28 image, predict the shape of `extract_features(model, x, before=name)[0]` for
# `keras_transfer_net` at each cut point below. A 3 × 3 convolution without padding shrinks each side by
# 2 (output size `(H - k + 2p) / s + 1`, docs/formulas.md §1); a 2 × 2 max-pool halves it; `flatten`
# multiplies out channels × height × width.

# %%
CUTS = ["relu1", "pool", "dropout1", "fc1", "fc2"]


def check_feature_shapes(predicted):
    """Compare {cut: shape} with the shapes extract_features really returns for one image."""
    net = keras_transfer_net()
    x = prepare_images(test_b[0][:1])
    for cut_at in CUTS:
        actual = transfer.extract_features(net, x, before=cut_at).shape[1:]
        assert cut_at in predicted, f"no prediction for before={cut_at!r}"
        got = tuple(predicted[cut_at])
        assert got == actual, (f"before={cut_at!r}: you predicted {got}, the features are {actual} "
                               f"(that is the output of the layer just before {cut_at!r})")
    print("correct:", {cut_at: tuple(shape) for cut_at, shape in predicted.items()})


try:
    check_feature_shapes({"relu1": (32, 28, 28), "pool": (32, 24, 24), "dropout1": (32, 12, 12),
                          "fc1": (4608,), "fc2": (128,)})
except AssertionError as wrong:
    print("a wrong answer gets:", wrong)

# Solution: conv1 26x26, conv2 24x24, pool 12x12, flatten 32*12*12 = 4608, fc1 128.
check_feature_shapes({"relu1": (32, 26, 26),      # conv1's output: 28 - 3 + 1 = 26
                      "pool": (32, 24, 24),       # what feeds the pool: relu2 after conv2, 26 - 3 + 1 = 24
                      "dropout1": (32, 12, 12),   # the max-pool output, 24 / 2 = 12
                      "fc1": (32 * 12 * 12,),     # flatten: 4,608 numbers
                      "fc2": (128,)})             # fc1 -> relu -> dropout2: 128 hidden features

# %% [markdown]
# ## What to remember
#
# - A weight file holds the architecture and the weights, safely (no pickle); `load_model` rebuilds it.
# - Surgery first (`replace_head`, `freeze`), optimizer second; `summary` shows the set-up, `fit` refuses a
#   trainable parameter the optimizer does not hold, and `assert_frozen_unchanged` proves a freeze held.
# - Feature extraction on cached features is the same computation as training through a frozen body,
#   minus the repeated forward pass of the body.
# - Fine-tune the body ~10× slower than the head; with few labels, transfer beats training from scratch
#   by several points, and its lead shrinks as labels grow.
