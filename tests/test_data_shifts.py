"""nnscratch.data.shifts: the derived MNIST tasks, and the exact constructions of nnscratch.transfer.limits."""
import numpy as np
import pytest

import nnscratch as nn
from nnscratch.data import shifts as data_shifts
from nnscratch.transfer import limits as transfer_limits
from nnscratch.data import prepare_images, to_float

RNG = np.random.default_rng(12)


def digits(n=6, size=28):
    return RNG.integers(0, 256, size=(n, size, size), dtype=np.uint8)


def test_invert_is_an_involution_and_exact_negation_at_black_and_white():
    x = digits()
    assert np.array_equal(data_shifts.invert(data_shifts.invert(x)), x)
    assert data_shifts.invert(np.zeros((1, 2, 2), np.uint8)).tolist() == [[[255, 255], [255, 255]]]
    levels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    z, z_inverted = prepare_images(levels), prepare_images(data_shifts.invert(levels))
    # (x/255 - 0.5)/0.5 is odd around x = 127.5: inversion negates it, up to one float32 rounding step
    assert np.max(np.abs(z + z_inverted)) <= 6e-8
    assert z.ravel()[0] == -z_inverted.ravel()[0] == -1.0   # black and white are exact


def test_rotate90_turns_counter_clockwise_and_four_turns_are_the_identity():
    x = np.zeros((1, 3, 3), np.uint8)
    x[0, 0, 2] = 9                                  # top right corner
    turned = data_shifts.rotate90(x)
    assert turned[0, 0, 0] == 9 and turned.sum() == 9  # goes to the top left
    y = digits()
    four = y
    for _ in range(4):
        four = data_shifts.rotate90(four)
    assert np.array_equal(four, y)
    assert data_shifts.rotate90(y).flags.c_contiguous
    assert np.array_equal(data_shifts.rotate90(y[:, None]), data_shifts.rotate90(y)[:, None])  # (N, C, H, W)


def test_permutation_is_seeded_and_permute_pixels_moves_each_pixel_once():
    p = data_shifts.pixel_permutation(784, seed=3)
    assert np.array_equal(p, data_shifts.pixel_permutation(784, seed=3))
    assert not np.array_equal(p, data_shifts.pixel_permutation(784, seed=4))
    assert np.array_equal(np.sort(p), np.arange(784))
    x = digits()
    shuffled = data_shifts.permute_pixels(x, p)
    assert shuffled.shape == x.shape and shuffled.dtype == np.uint8
    assert np.array_equal(shuffled.reshape(6, -1), x.reshape(6, -1)[:, p])
    assert np.array_equal(np.sort(shuffled.reshape(6, -1), 1), np.sort(x.reshape(6, -1), 1))
    inverse = np.argsort(p)
    assert np.array_equal(data_shifts.permute_pixels(shuffled, inverse), x)


def test_parity_and_random_labels():
    assert data_shifts.parity_labels(np.arange(10)).tolist() == [0, 1] * 5
    assert data_shifts.parity_labels(np.array([3], np.uint8)).dtype == np.int64
    labels = data_shifts.random_labels(5000, 5, seed=1)
    assert labels.dtype == np.int64 and labels.min() == 0 and labels.max() == 4
    assert np.array_equal(labels, data_shifts.random_labels(5000, 5, seed=1))
    counts = np.bincount(labels, minlength=5)
    assert np.all(np.abs(counts - 1000) < 120), counts   # uniform: 1000 ± ~4 sd


def test_shift_table():
    table = data_shifts.shifts(permutation_seed=2)
    assert list(table) == ["none", "inverted", "rotated 90°", "permuted", "x/255"]
    x = digits()
    assert np.array_equal(table["none"](x), prepare_images(x))
    assert np.array_equal(table["inverted"](x), prepare_images(255 - x))
    assert np.array_equal(table["rotated 90°"](x), prepare_images(np.rot90(x, 1, axes=(1, 2))))
    permuted = prepare_images(x).reshape(6, -1)[:, data_shifts.pixel_permutation(784, 2)].reshape(6, 1, 28, 28)
    assert np.array_equal(table["permuted"](x), permuted)
    assert np.array_equal(table["x/255"](x), to_float(x))
    for shift in table.values():
        out = shift(x)
        assert out.shape == (6, 1, 28, 28) and out.dtype == np.float32, shift.name


@pytest.mark.parametrize("call, message", [
    (lambda: data_shifts.invert(np.zeros((2, 28, 28), np.float32)), "uint8"),
    (lambda: data_shifts.rotate90(np.zeros((2, 28, 27), np.uint8)), "square"),
    (lambda: data_shifts.permute_pixels(digits(), np.arange(783)), "pixel_permutation"),
    (lambda: data_shifts.permute_pixels(digits(), np.zeros(784, int)), "reorder"),
    (lambda: data_shifts.parity_labels(np.array([10])), "digits 0-9"),
    (lambda: data_shifts.random_labels(10, 1), "num_classes >= 2"),
    (lambda: data_shifts.pixel_permutation(0), "positive"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_negated_first_layer_undoes_negated_inputs_bit_for_bit():
    nn.manual_seed(0)
    model = transfer_limits.network(transfer_limits.QUICK)
    model.conv1.bias.data[...] = np.linspace(-0.3, 0.3, model.conv1.bias.shape[0])  # a bias that matters
    flipped = transfer_limits.negate_first_layer(model)
    x = prepare_images(digits())
    with model.eval_mode(), flipped.eval_mode():
        assert np.array_equal(model(x), flipped(-x))
        assert not np.array_equal(model(x), flipped(x))
    assert np.array_equal(flipped.conv1.bias.data, model.conv1.bias.data)      # the bias is kept
    assert np.array_equal(flipped.conv1.weight.data, -model.conv1.weight.data)


def test_permuted_fc1_columns_undo_a_pixel_permutation():
    nn.manual_seed(1)
    model = transfer_limits.dense_network(num_classes=5, hidden=16)
    p = data_shifts.pixel_permutation(784, seed=5)
    rewired = transfer_limits.permute_input_columns(model, p)
    x = prepare_images(digits(20))
    x_permuted = x.reshape(20, -1)[:, p].reshape(x.shape)
    with model.eval_mode(), rewired.eval_mode():
        original, permuted = model(x), rewired(x_permuted)
    # the same products, summed in another order: equal up to float32 rounding
    np.testing.assert_allclose(permuted, original, rtol=1e-5, atol=1e-5)
    assert np.array_equal(original.argmax(1), permuted.argmax(1))
    with pytest.raises(ValueError, match="fc1 takes 784 inputs"):
        transfer_limits.permute_input_columns(model, np.arange(10))
