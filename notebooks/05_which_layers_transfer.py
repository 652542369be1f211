# %% [markdown]
# # 05 — Which layers transfer? (Yosinski et al. on MNIST)
#
# The seed article (sections 2.3 and 3.2, summarized in [docs/seed.md](../docs/seed.md)) reuses the layers of a
# pre-trained CNN for a new task, as a feature extractor or as the start of fine-tuning, without saying which
# layers. The reason usually given is that the lower layers learn *general* features (edges, blobs) and the
# upper layers *task-specific* ones, so which layers you transfer matters. Yosinski, Clune, Bengio and Lipson measured exactly this on ImageNet ("How
# transferable are features in deep neural networks?", NeurIPS 2014). They split the classes into two halves
# A and B, trained a base network on each, and built new networks for B whose first **n** layers were copied
# from a base network, for every n. This notebook runs their protocol on MNIST: A = digits 0–4, B = digits
# 5–9 with only 100 labels per class.
#
# | name | first n layers | layers above |
# |---|---|---|
# | **BnB** | copied from the net trained on B, **frozen** | random, trained on B |
# | **BnB+** | copied from the net trained on B, **fine-tuned** | random, trained on B |
# | **AnB** | copied from the net trained on A, frozen | random, trained on B |
# | **AnB+** | copied from the net trained on A, fine-tuned | random, trained on B |
# | **RnB** | random, never trained, frozen (a control) | random, trained on B |
#
# n = 0 is the base network trained on B from scratch: the **baseline**. The paper found three things:
# 1. **fragile co-adaptation**: BnB *dips* below the baseline for middle n, because neighbouring layers had
#    co-adapted (features that only work together) and the new upper layers cannot re-learn the partner;
# 2. **growing specificity**: AnB falls as n grows, because higher layers are specific to A's classes;
# 3. **a lasting boost**: AnB+ ends *above* the baseline at every n, even after fine-tuning everything.
#
# **Goals.** By the end you can build AnB/BnB networks with `nnscratch.transfer`, prove that the copied layers
# are bit-identical to their source and that frozen ones stay so, train frozen layers as cached features, read
# a Figure-2 plot, and say which of the three findings hold on MNIST, with what spread over seeds, and why.
#
# **Runtime on 2 cores** (measured 2026-12-01, kernel start included): full mode (5 seeds, 27 trainings
# each) 209–227 s; quick mode (`NNSCRATCH_QUICK=1`, one seed on a few hundred images) 3 s.
#
# **Prerequisites:** notebook 04 (freezing, `frozen_snapshot`, cached features with `extract_features`). The
# protocol lives in `nnscratch/transfer_study.py`; `examples/layer_transfer.py` runs the same code as a script,
# and [docs/transfer_studies.md](../docs/transfer_studies.md) holds its results.

# %%
import nnscratch as nn
from nnscratch import notebook
session = notebook.start("05 — Which layers transfer? (Yosinski on MNIST)")
QUICK, OUT = session.quick, session.out

# %%
import numpy as np

from nnscratch import plot, transfer
from nnscratch.transfer import study
from nnscratch.data import load_mnist, prepare_images

# %% [markdown]
# ## The network: why four convolutions
#
# Both networks of the earlier notebooks (the seed's Net, article 4.2, and Keras's transfer net) have four
# weight layers: conv1, conv2, fc1, fc2. Since the output layer is always new, that leaves three transfer
# points, too few to see a trend along the depth, and fc1 holds almost all the parameters. The paper's
# AlexNet had eight layers. `study.transfer_net` has **six weight layers, so five transfer points** (n = 1..5):
# four 3×3 convolutions and two dense layers. Like AlexNet it pools right after conv1, so the three upper
# convolutions run on 13×13 maps and smaller; with 8-16-16-32 channels a base network trains on 30,000 images
# in about 10 s. It has no dropout, so a frozen prefix gives the same output in training and in eval mode, and
# its output can be cached exactly.

# %%
config = study.QUICK if QUICK else study.StudyConfig()
SEEDS = [0] if QUICK else [0, 1, 2, 3, 4]
print(config)
print(transfer.summary(config.build()))

# %% [markdown]
# ## The tasks
#
# `make_tasks` keeps the digits 0–4 as task A (all 30,596 training images) and draws 100 labelled images per
# class of the digits 5–9 as task B (500 images), with a different draw for every seed. Both are relabelled
# 0–4. With so few labels for B, a network trained on B alone is limited by its data, which is where transfer
# should show. In quick mode everything is tiny and the accuracies mean nothing.

# %%
train_pair, test_pair = load_mnist()
tasks = study.make_tasks(train_pair, test_pair, config.b_per_class, seed=0, a_limit=config.a_limit,
                         test_limit=config.test_limit)
for name, (images, labels) in tasks.items():
    print(f"{name:8} {len(labels):6,} images, labels {np.bincount(labels).tolist()}")

# %% [markdown]
# ## One transferred network, by hand
#
# Before the whole sweep, one network of the protocol, AnB with n = 3, built step by step. First the base
# networks of seed 0: one trained on A, one on B, and an untrained one (the source of RnB). The kernels run on
# one thread: this network's batches are so small that waking a second thread costs more than it saves.

# %%
nn.set_num_threads(1)
sources, base = study.base_networks(tasks, config, seed=0)
print(f"baseA on A's test set: {base['A']:.2%}; baseB (the n = 0 baseline) on B's test set: {base['B']:.2%}")

# %% [markdown]
# `transferred_net` seeds the library generator, builds a fresh network (random everywhere), copies the first
# n weight layers of the source into it **as new arrays** (training the copy must not change the source) and
# freezes them. The layers above depend only on the seed, so AnB and BnB of one (seed, n) start from the very
# same random upper layers: only the copied layers differ.

# %%
n = 3
anb = study.transferred_net(sources["A"], n, fine_tune=False, seed=7)
copied = study.weight_layers(anb)[:n]
identical = study.bit_identical(sources["A"], anb, n)
views = [name for name in copied if np.shares_memory(anb[name].weight.data, sources["A"][name].weight.data)]
print(f"copied layers {copied}: bit-identical to baseA -> {identical} (expect True)")
print(f"copied arrays sharing memory with the source: {views} (expect none)")
print(f"frozen parameters: {transfer.frozen_parameters(anb)}")
assert identical and not views
assert transfer.frozen_parameters(anb) == [f"{name}.{p}" for name in copied for p in ("weight", "bias")]

# %% [markdown]
# Frozen layers never change, so their output for a training image is the same at every epoch. Instead of
# running conv1–conv3 at every step, run them **once** (`extract_features(..., before="conv4")`: everything
# that feeds conv4) and train `anb["conv4":]` on the cached arrays. Is that the same computation? The cached
# features must equal what the frozen prefix computes in training mode, bit for bit:

# %%
x_train, y_train = tasks["B_train"]
cut = study.weight_layers(anb)[n]
features = transfer.extract_features(anb, x_train, before=cut, transform=prepare_images)
prefix_output = transfer.cut(anb, before=cut)(prepare_images(x_train[:64]))   # training mode, as fit runs it
print(f"cut before {cut!r}: features {features.shape}; largest |cached - prefix output| on 64 images: "
      f"{np.max(np.abs(features[:64] - prefix_output))} (expect exactly 0.0)")
assert np.array_equal(features[:64], prefix_output)

# %% [markdown]
# Now train the upper layers on the cached features, and check both directions: the frozen layers are
# bit-identical afterwards (`assert_frozen_unchanged` compares bytes), and the trainable ones did move
# (otherwise the first check would prove nothing).

# %%
snapshot = transfer.frozen_snapshot(anb)
fc1_before = anb.fc1.weight.data.copy()
study.train(anb[cut:], features, y_train, config.target, seed=7, transform=None)
transfer.assert_frozen_unchanged(anb, snapshot)     # raises, naming the parameter, if any bit changed
fc1_change = float(np.max(np.abs(anb.fc1.weight.data - fc1_before)))
x_test, y_test = tasks["B_test"]
print(f"frozen {list(snapshot)}: unchanged after training")
print(f"largest change of fc1.weight: {fc1_change:.3g} (expect > 0)")
print(f"AnB n={n} on B's test set: {study.accuracy(anb, x_test, y_test):.2%} (baseline {base['B']:.2%})")
assert fc1_change > 0

# %% [markdown]
# `study.run_treatment` does exactly these steps for any treatment and depth, and records both checks in its
# result (`copied_bit_identical`, `frozen_unchanged`). Fine-tuned runs (BnB+, AnB+) freeze nothing and train
# the whole network on the images.
#
# ## The sweep: five treatments × five depths × five seeds
#
# `run_study` does, for every seed: draw B's 100 labels per class, train baseA, baseB and keep an untrained
# net, then run every treatment at every n: 27 trainings per seed. Every run trains for the same schedule
# (SGD with momentum 0.9, learning rate 0.01, batches of 20, 20 epochs: 500 steps).

# %%
def show(description):
    """run_study calls this after every training; print only each seed's start (no progress bar in outputs)."""
    if description.endswith("base networks"):
        print(description)


results, networks = study.run_study(train_pair, test_pair, config, SEEDS, on_run=show)
print()
print(study.format_table(results))

# %% [markdown]
# The mechanics, asserted over every run of every seed: the copied layers were bit-identical to their source
# before training, the frozen ones are bit-identical after, and no base network moved while hundreds of
# networks copied from it trained.

# %%
runs = [run for one in results["seeds"] for run in one["runs"]]
print(f"{len(runs)} runs: copied layers bit-identical before training in "
      f"{sum(r['copied_bit_identical'] for r in runs)}, frozen layers unchanged after in "
      f"{sum(r['frozen_unchanged'] for r in runs)} (expect {len(runs)} and {len(runs)})")
print(f"base networks unchanged by the runs in {sum(one['sources_unchanged'] for one in results['seeds'])} "
      f"of {len(results['seeds'])} seeds")
assert study.mechanics_hold(results)
assert all(r["frozen"] == [] for r in runs if r["treatment"].endswith("+"))
assert all(len(r["frozen"]) == 2 * r["n"] for r in runs if not r["treatment"].endswith("+"))

# %% [markdown]
# ## Figure 2, on MNIST
#
# The paper's layout: the x axis is n, every dot is one trained network (one per seed), the lines join the
# means, white dots and the dashed line are the baseline B. First everything, the random control included:

# %%
baseline, curves = study.accuracies(results)
plot.layer_transfer(baseline, curves)

# %% [markdown]
# RnB collapses: with random frozen layers up to conv3 or deeper, the network is at chance (20 %). Random
# *convolutions* still carry information at n = 1 and 2, but each further random layer destroys more of it.
# So everything AnB keeps above RnB was *learned* on A. Now zoomed in on the four curves of the paper:

# %%
paper = {name: curves[name] for name in ("BnB", "BnB+", "AnB", "AnB+")}
all_values = np.concatenate([baseline] + [v for c in paper.values() for v in c.values()])
plot.layer_transfer(baseline, paper, ylim=(100 * all_values.min() - 1, 100 * all_values.max() + 0.5),
                    title="BnB, BnB+, AnB, AnB+ (zoomed; one dot per seed)")

# %% [markdown]
# ## conv1, learned on A and on B
#
# If the first layer learns general features, the filters learned on the digits 0–4 and on 5–9 should be of the
# same kind. Top row: baseA's conv1; bottom row: baseB's (seed 0). Red weights respond to bright pixels, blue
# ones to dark pixels.

# %%
first = networks[SEEDS[0]]
both = np.concatenate([first["A"].conv1.weight.data, first["B"].conv1.weight.data])
plot.filters(both, ncols=len(first["A"].conv1.weight.data),
             title="conv1 filters: top row learned on A (0-4, 30,596 images), bottom on B (5-9, 500 images)")

# %% [markdown]
# Both rows hold the same kind of filter: small edge detectors (red on one side, blue on the other) in various
# orientations, and blobs. None is "about" a 3 or a 7; which orientation lands in which channel is arbitrary.
# That is why copying conv1 from A costs nothing on B (AnB at n = 1 is as good as BnB).
#
# ## Which findings reproduce? Measured, seed by seed
#
# `study.findings` measures each finding in each seed, counting an effect only when it is larger than 0.3
# points (`study.NOISE`, one binomial standard deviation of an accuracy near 95 % on B's 4,861 test images):
# - co-adaptation: the **dip** = baseline − the lowest BnB over n;
# - specificity: the **drop** = AnB at n = 1 − AnB at n = 5;
# - boost: the **margin** = the lowest AnB+ over n − baseline (so "above the baseline at every n").

# %%
found = study.findings(results)
measure = {"co_adaptation": "dip", "specificity": "drop", "boost": "margin"}
for name, key in measure.items():
    values = [row[key] for row in found[name]["per_seed"]]
    print(f"{name:14} {key:6} per seed (points): {', '.join(f'{100 * v:+.2f}' for v in values)}  -> "
          f"held in {found[name]['held_in']} of {found[name]['seeds']} seeds")
gaps = [(row["gap_first"], row["gap_last"]) for row in found["specificity"]["per_seed"]]
print("BnB - AnB at n=1 and n=5 per seed (points):", ", ".join(f"{100 * a:+.2f}/{100 * b:+.2f}" for a, b in gaps))

# %% [markdown]
# What the measurements say (full mode, seeds 0–4; the same numbers as `examples/layer_transfer.py` and
# docs/transfer_studies.md, since everything is seeded):
#
# - **Growing specificity: reproduced, in every seed.** AnB stays within about a point of the baseline and of
#   BnB up to n = 4 (but for one seed at n = 4, the red dot near 92.5 %), then falls at n = 5, when fc1 is copied from A too: by 3.7 to 6.8 points from n = 1 to
#   n = 5, and at n = 5 it is several points below BnB in every seed. The dense layer trained to separate 0–4
#   is specific to 0–4; the four convolutions below it are general enough for 5–9. On MNIST the specificity
#   arrives late, in the last transferred layer, where on ImageNet it grew from the middle layers on.
# - **Lasting boost: mixed, not reproduced in every seed.** Averaged over the seeds, AnB+ is above the baseline
#   at n = 2..5 (by 0.2 to 0.8 points), but within a seed it was above the baseline at every n in only 2 of 5
#   seeds. The effect is no larger than the spread of the baseline itself over seeds (± 0.6 points). MNIST's digits 5–9 are easy: 500 labels already give about 95 %, so a better start
#   has little left to win, whereas on ImageNet the base networks never saturate.
# - **Fragile co-adaptation: not reproduced.** The mean BnB is above the baseline, or within 0.1 points of it,
#   at every n. BnB dipped
#   by more than 0.3 points in 3 of 5 seeds, but at n = 1, 5 and 2, no consistent depth, and by as much as two
#   trainings of the same network differ (BnB+ against the baseline); in seeds 3 and 4 BnB never falls more
#   than 0.2 points below the baseline. The network is shallow and narrow, so its upper layers re-learn on top of frozen lower
#   ones within 500 steps; and BnB's frozen layers had already trained for 500 steps before, an advantage over
#   the baseline that the paper's converged base networks did not give. The paper's dip appeared in the middle
#   of an 8-layer, 60-million-parameter network whose layers co-adapted over 90 epochs of ImageNet.
#
# So the assertion below checks, in full mode, the only finding that held in **every** seed: specificity.

# %%
# Measured over seeds 0-4: AnB drop n=1 -> n=5 of 3.66 to 6.83 points (3.54 to 6.32 with the kernels' previous
# arithmetic); asserting it exceeds NOISE (0.3) in
# every seed and is at least 2 points in every seed.
print(f"specificity held in {found['specificity']['held_in']} of {found['specificity']['seeds']} seeds "
      f"(expect every seed in full mode); smallest drop "
      f"{100 * min(r['drop'] for r in found['specificity']['per_seed']):.2f} points (expect ~3.5)")
if not QUICK:
    assert found["specificity"]["holds_in_every_seed"], found["specificity"]
    assert min(r["drop"] for r in found["specificity"]["per_seed"]) >= 0.02, found["specificity"]

# %% [markdown]
# ## Exercises
#
# ### Exercise 1 — what does a frozen run cache?
#
# For the treatment AnB at depth n, `run_treatment` caches the features that feed the first weight layer *not*
# copied. Without running anything, give the shape of one image's cached features for n = 1, 2, 3, 4 and 5 of
# `study.transfer_net()` (channels 8-16-16-32, hidden 64), as a dict `{n: shape}`. Use the sizes in the
# docstring of `transfer_net`: a 3×3 convolution without padding takes 2 pixels off each side length, a max-pool
# of 2 halves it (rounding down).

# %%
def check_cached_shapes(answer):
    """Compare {n: shape of one image's features} with what extract_features gives."""
    net = study.transfer_net()
    image = np.zeros((1, 1, 28, 28), dtype=np.float32)
    for depth in study.transfer_points(net):
        truth = transfer.extract_features(net, image, before=study.weight_layers(net)[depth]).shape[1:]
        assert depth in answer, f"no shape for n={depth}"
        got = tuple(answer[depth])
        assert got == truth, (f"n={depth}: the features feeding {study.weight_layers(net)[depth]!r} have shape "
                              f"{truth}, not {got}" + (" (after flatten they are one vector)" if len(truth) == 1
                                                       else " (channels, height, width)"))
    print("correct:", answer)


# Solution: conv1 26x26 -> pool 13; conv2 11; conv3 9; conv4 7 -> pool 3 -> flatten 32*3*3 = 288; fc1 64.
check_cached_shapes({1: (8, 13, 13), 2: (16, 11, 11), 3: (16, 9, 9), 4: (288,), 5: (64,)})

# %% [markdown]
# ### Exercise 2 — copy layers yourself
#
# Write `my_copy_layers(source, target, n)`, which copies the weight and bias of the first n weight layers of
# `source` into `target` (use `study.weight_layers`). The check trains the target afterwards and verifies that
# the source did not move: a copy that shares memory with the source is the classic bug.

# %%
def check_copy_layers(copy_fn):
    """Run copy_fn(source, target, 2) and check bit-identity, independence and that nothing else moved."""
    nn.manual_seed(1)
    source = study.transfer_net()
    nn.manual_seed(2)
    target = study.transfer_net()
    untouched = target.conv3.weight.data.copy()
    copy_fn(source, target, 2)
    assert study.bit_identical(source, target, 2), "conv1 and conv2 (weight and bias) must equal the source's"
    assert np.array_equal(target.conv3.weight.data, untouched), "only the first n weight layers may change"
    kept = source.conv1.weight.data.copy()
    target.conv1.weight.data += 1.0    # what training the target does
    assert np.array_equal(source.conv1.weight.data, kept), (
        "changing the target changed the source: copy the arrays (.copy()), don't share them")
    print("correct: bit-identical copies, independent of the source")


def my_copy_layers(source, target, n):
    for name in study.weight_layers(target)[:n]:
        for mine, theirs in zip(target[name].parameters(), source[name].parameters()):
            mine.data = theirs.data.copy()


check_copy_layers(my_copy_layers)

# %% [markdown]
# ### Exercise 3 — the co-adaptation dip from the results
#
# Write `dips(results)` returning, for each seed, the largest amount by which BnB falls below that seed's
# baseline over n (0 if BnB never falls below it), in accuracy units (not %). Each seed's entry of
# `results["seeds"]` has `base["B"]` and `runs`, a list of dicts with `treatment`, `n` and `accuracy`.

# %%
def check_dips(fn):
    """Compare fn(results) with the dips computed by study.findings."""
    got = np.asarray(fn(results), dtype=float)
    truth = np.maximum([row["dip"] for row in study.findings(results)["co_adaptation"]["per_seed"]], 0.0)
    assert got.shape == truth.shape, f"one value per seed: expected {truth.size}, got {got.size}"
    assert np.all(got >= 0), "a BnB above the baseline is no dip: clip at 0"
    assert np.allclose(got, truth), f"expected {np.round(truth, 4).tolist()}, got {np.round(got, 4).tolist()}"
    print("correct:", [f"{100 * d:.2f} points" for d in got])


def dips(results):
    out = []
    for one in results["seeds"]:
        lowest = min(r["accuracy"] for r in one["runs"] if r["treatment"] == "BnB")
        out.append(max(one["base"]["B"] - lowest, 0.0))
    return out


check_dips(dips)

# %% [markdown]
# ## What to remember
#
# - Copy layers as new arrays and check them bit for bit; freeze them and check them again after training
#   (`frozen_snapshot`, `assert_frozen_unchanged`). Frozen layers can be run once and cached: same result, less work.
# - On MNIST, the convolutions transfer between digit sets almost for free (AnB ≈ BnB up to n = 4); the dense
#   layer does not (AnB falls at n = 5). Transfer the convolutions, retrain the dense layers.
# - Fine-tuning layers pre-trained on a related, larger task is never much worse than training from scratch
#   and on average a little better here (AnB+), but on an easy task the gain is within the seed spread.
# - A finding of a paper is a measurement under its conditions: the co-adaptation dip needs a deep network
#   trained long; this small one does not show it. Measure over seeds before you claim.
