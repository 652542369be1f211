"""Tests for nnscratch.data. All offline: downloads go to a local HTTP server."""

import functools
import gzip
import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest

from nnscratch import data

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def idx_bytes(array=None, *, type_code=None, dims=None, payload=None, magic=b"\x00\x00"):
    """IDX file content for `array`; the keyword arguments override parts of it
    to build malformed files."""
    codes = {np.dtype(dt): code for code, dt in data.IDX_DTYPES.items()}
    if array is not None:
        big_endian = np.dtype(array.dtype).newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
        type_code = codes[big_endian] if type_code is None else type_code
        dims = array.shape if dims is None else dims
        payload = array.astype(big_endian).tobytes() if payload is None else payload
    header = magic + bytes([type_code, len(dims)])
    header += b"".join(int(d).to_bytes(4, "big") for d in dims)
    return header + payload


def write_idx(path, content, compress):
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


def fake_mnist(n_train=6, n_test=4, seed=0):
    """Tiny MNIST-shaped datasets: name -> decompressed IDX bytes."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    return {name: idx_bytes(array) for name, array in arrays.items()}


def declared_dims(content):
    """The dimensions an IDX header declares."""
    return tuple(int.from_bytes(content[4 + 4 * i: 8 + 4 * i], "big") for i in range(content[3]))


@pytest.fixture
def isolated_places(tmp_path, monkeypatch):
    """Point every MNIST search place at empty temporary directories; return
    the cache directory."""
    for sub in ("repo", "env", "xdg"):
        (tmp_path / sub).mkdir()
    monkeypatch.setattr(data.mnist, "REPO_MNIST_DIR", tmp_path / "repo")
    monkeypatch.setenv("NNSCRATCH_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "nnscratch" / "mnist"


@pytest.fixture
def fake_files(monkeypatch):
    """Fake MNIST contents whose hashes replace the real ones in MNIST_FILES."""
    files = fake_mnist()
    for name, content in files.items():
        monkeypatch.setitem(data.MNIST_FILES, name, hashlib.sha256(content).hexdigest())
        monkeypatch.setitem(data.MNIST_SHAPES, name, (np.uint8, declared_dims(content)))
    return files


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over tmp_path/www; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# ---------------------------------------------------------------------------
# read_idx
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
)
def test_read_idx_round_trip(tmp_path, compress, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    path = write_idx(tmp_path / "a.idx", idx_bytes(array), compress)
    result = data.read_idx(path)
    assert result.dtype == np.dtype(dtype) and result.dtype.isnative
    assert result.flags.writeable
    np.testing.assert_array_equal(result, array)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_checks_sha256(tmp_path, compress):
    content = idx_bytes(np.arange(5, dtype=np.uint8))
    path = write_idx(tmp_path / "a.idx", content, compress)
    data.read_idx(path, sha256=hashlib.sha256(content).hexdigest())
    with pytest.raises(ValueError, match="SHA-256"):
        data.read_idx(path, sha256="0" * 64)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "content, message",
    [
        pytest.param(idx_bytes(np.arange(10, dtype=np.uint8))[:-1], "only 9 bytes", id="short"),
        pytest.param(idx_bytes(np.arange(10, dtype=np.uint8)) + b"\0", "trailing", id="trailing"),
        pytest.param(
            idx_bytes(np.arange(10, dtype=np.uint8), dims=(3, 4)), "12 payload bytes", id="dims"
        ),
        pytest.param(
            idx_bytes(np.arange(10, dtype=np.uint8), magic=b"\1\0"), "magic", id="magic"
        ),
        pytest.param(
            idx_bytes(np.arange(10, dtype=np.uint8), type_code=0x0A), "type code 0x0a", id="type"
        ),
        pytest.param(idx_bytes(np.zeros(1, np.uint8), dims=()), "0 dimensions", id="ndim0"),
        pytest.param(idx_bytes(np.zeros(1, np.uint8), dims=(1,) * 5), "5 dimensions", id="ndim5"),
        pytest.param(b"\0\0\x08\x02\0\0", "header truncated", id="cut-header"),
        pytest.param(b"\0\0", "too short", id="two-bytes"),
        pytest.param(b"", "too short", id="empty"),
    ],
)
def test_read_idx_rejects_malformed(tmp_path, compress, content, message):
    path = write_idx(tmp_path / "bad.idx", content, compress)
    with pytest.raises(ValueError, match=message) as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_lying_header_fails_fast(tmp_path, compress):
    # Claims 2**62 bytes (4 EiB) of uint8 but carries 100: refused from the header alone.
    content = idx_bytes(np.zeros(100, np.uint8), dims=(2**31, 2**31))
    path = write_idx(tmp_path / "huge.idx", content, compress)
    with pytest.raises(ValueError, match=f"declares {2**62} payload bytes, more than the limit"):
        data.read_idx(path)


def test_read_idx_rejects_gzip_garbage(tmp_path):
    path = tmp_path / "garbage.gz"
    path.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="gzip") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_rejects_truncated_gzip(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match="gzip"):
        data.read_idx(path)


# ---------------------------------------------------------------------------
# load_mnist
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    assert data.REPO_MNIST_DIR.is_dir(), "the repository copy data/mnist/ is missing"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("NNSCRATCH_DATA", raising=False)
        return data.load_mnist(download=False)


def test_real_mnist(mnist):
    (train_x, train_y), (test_x, test_y) = mnist
    assert train_x.shape == (60000, 28, 28) and train_y.shape == (60000,)
    assert test_x.shape == (10000, 28, 28) and test_y.shape == (10000,)
    for array in (train_x, train_y, test_x, test_y):
        assert array.dtype == np.uint8
    assert np.bincount(train_y).tolist() == TRAIN_COUNTS
    assert np.bincount(test_y).tolist() == TEST_COUNTS


def test_prepare_images_on_mnist(mnist):
    images = mnist[1][0][:100]
    x = data.prepare_images(images)
    assert x.dtype == np.float32 and x.shape == (100, 1, 28, 28)
    expected = ((images / 255 - 0.5) / 0.5)[:, None]
    np.testing.assert_allclose(x, expected, atol=1e-6)
    assert x.min() == -1.0 and x.max() == 1.0


def test_load_from_root_with_raw_and_gz(tmp_path, isolated_places, fake_files):
    root = tmp_path / "root"
    root.mkdir()
    for i, (name, content) in enumerate(fake_files.items()):
        write_idx(root / (name + ".gz" if i % 2 else name), content, compress=bool(i % 2))
    (train_x, train_y), (test_x, test_y) = data.load_mnist(root=root, download=False)
    assert train_x.shape == (6, 28, 28) and test_y.shape == (4,)
    assert train_x.tobytes() == fake_files["train-images-idx3-ubyte"][16:]


def test_load_from_env_dir(tmp_path, isolated_places, fake_files):
    for name, content in fake_files.items():
        write_idx(tmp_path / "env" / f"{name}.gz", content, compress=True)
    (train_x, _), _ = data.load_mnist(download=False)
    assert train_x.shape == (6, 28, 28)


def test_wrong_checksum_is_an_error(tmp_path, isolated_places, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    for name, content in fake_mnist().items():  # real hashes stay in MNIST_FILES
        write_idx(root / f"{name}.gz", content, compress=True)
        monkeypatch.setitem(data.MNIST_SHAPES, name, (np.uint8, declared_dims(content)))
    with pytest.raises(ValueError, match="expected ba891046") as info:
        data.load_mnist(root=root, download=False)
    assert "train-images-idx3-ubyte.gz" in str(info.value)


def test_mnist_files_of_the_wrong_size_are_refused_from_the_header(tmp_path, isolated_places):
    """MNIST's sizes are known: a file declaring other dims (e.g. a decompression bomb
    claiming a huge payload) is refused before its payload is read."""
    root = tmp_path / "root"
    root.mkdir()
    for name, content in fake_mnist().items():  # 6 / 4 samples instead of 60000 / 10000
        write_idx(root / f"{name}.gz", content, compress=True)
    with pytest.raises(ValueError, match=r"declares dimensions \(6, 28, 28\), expected \(60000, 28, 28\)") as info:
        data.load_mnist(root=root, download=False)
    assert "train-images-idx3-ubyte.gz" in str(info.value)


def test_not_found_without_download(tmp_path, isolated_places):
    with pytest.raises(data.MNISTNotFoundError) as info:
        data.load_mnist(download=False)
    message = str(info.value)
    for place in (tmp_path / "repo", tmp_path / "env", isolated_places):
        assert str(place) in message
    assert "download=False" in message


def test_download_falls_back_to_next_mirror(server, isolated_places, fake_files):
    root, base = server
    for sub in ("empty", "corrupt", "good"):
        (root / sub).mkdir()
    for name, content in fake_files.items():
        write_idx(root / "good" / f"{name}.gz", content, compress=True)
        write_idx(root / "corrupt" / f"{name}.gz", content[:-1] + b"\xff", compress=True)
    mirrors = [f"{base}/empty/", f"{base}/corrupt", f"{base}/good/"]

    (train_x, train_y), (test_x, test_y) = data.load_mnist(mirrors=mirrors, progress=False)
    assert train_x.shape == (6, 28, 28) and test_x.shape == (4, 28, 28)
    assert sorted(p.name for p in isolated_places.iterdir()) == sorted(
        f"{name}.gz" for name in fake_files
    )  # no leftover temporary files

    # Now cached: loads with every mirror unreachable.
    (train_x2, _), _ = data.load_mnist(mirrors=[closed_port_url()], progress=False)
    np.testing.assert_array_equal(train_x, train_x2)


def test_download_only_missing_files(server, isolated_places, fake_files):
    root, base = server
    isolated_places.mkdir(parents=True)
    for name, content in fake_files.items():
        target = isolated_places if name.startswith("train") else root
        write_idx(target / f"{name}.gz", content, compress=True)
    (train_x, _), (test_x, _) = data.load_mnist(mirrors=[base], progress=False)
    assert train_x.shape == (6, 28, 28) and test_x.shape == (4, 28, 28)


def test_download_all_mirrors_fail(server, isolated_places, fake_files):
    _, base = server
    mirrors = [closed_port_url(), f"{base}/nothing-here/"]
    with pytest.raises(data.MNISTNotFoundError) as info:
        data.load_mnist(mirrors=mirrors, progress=False)
    message = str(info.value)
    assert mirrors[0] in message and "404" in message
    assert str(isolated_places) in message
    assert not any(isolated_places.iterdir())


# ---------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------


def test_to_float_and_normalize():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    x = data.to_float(images)
    assert x.dtype == np.float32 and x.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(x[0, 0], [[0, 1], [0.2, 0.4]], rtol=1e-6)
    y = data.Normalize(0.5, 0.25)(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[0, 0], [[-2, 2], [-1.2, -0.4]], rtol=1e-6)
    per_channel = data.Normalize([0.0, 1.0], [1.0, 2.0])(np.ones((1, 2, 1, 1), np.float32))
    np.testing.assert_allclose(per_channel.ravel(), [1.0, 0.0])
    with pytest.raises(ValueError, match="uint8"):
        data.to_float(x)
    with pytest.raises(ValueError, match="positive"):
        data.Normalize(0.0, 0.0)


# ---------------------------------------------------------------------------
# DataLoader
# ---------------------------------------------------------------------------


def epoch_labels(loader):
    return np.concatenate([y for _, y in loader])


def test_dataloader_batches_and_len():
    images = np.arange(10 * 2).reshape(10, 2).astype(np.uint8)
    labels = np.arange(10, dtype=np.uint8)
    loader = data.DataLoader(images, labels, batch_size=4)
    assert len(loader) == 3
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert all(y.dtype == np.int64 for _, y in batches)
    np.testing.assert_array_equal(batches[1][0], images[4:8])
    np.testing.assert_array_equal(epoch_labels(loader), labels)

    dropping = data.DataLoader(images, labels, batch_size=4, drop_last=True)
    assert len(dropping) == 2 and [len(y) for _, y in dropping] == [4, 4]
    assert len(data.DataLoader(images, labels, batch_size=5, drop_last=True)) == 2
    assert len(data.DataLoader(images, labels, batch_size=11, drop_last=True)) == 0


def test_dataloader_shuffle_is_deterministic():
    images = np.arange(100)[:, None]
    labels = np.arange(100)
    a = data.DataLoader(images, labels, batch_size=7, shuffle=True, seed=3)
    b = data.DataLoader(images, labels, batch_size=7, shuffle=True, seed=3)
    a0, a1 = epoch_labels(a), epoch_labels(a)
    assert sorted(a0.tolist()) == labels.tolist()
    assert not np.array_equal(a0, a1)  # new order each epoch
    np.testing.assert_array_equal(a0, epoch_labels(b))  # same seed, same order
    np.testing.assert_array_equal(a1, epoch_labels(b))
    b.set_epoch(1)  # resuming at epoch 1 replays it
    np.testing.assert_array_equal(a1, epoch_labels(b))
    other = data.DataLoader(images, labels, batch_size=7, shuffle=True, seed=4)
    assert not np.array_equal(a0, epoch_labels(other))
    x, y = next(iter(a))
    np.testing.assert_array_equal(x[:, 0], y)  # images and labels stay paired


def test_dataloader_transform_and_validation():
    images = np.zeros((6, 28, 28), np.uint8)
    loader = data.DataLoader(images, np.zeros(6, int), batch_size=4, transform=data.prepare_images)
    x, _ = next(iter(loader))
    assert x.shape == (4, 1, 28, 28) and x.dtype == np.float32
    with pytest.raises(ValueError, match=r"\(6, 28, 28\) and \(5,\)"):
        data.DataLoader(images, np.zeros(5, int), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        data.DataLoader(images, np.zeros(6, int), batch_size=0)


# ---------------------------------------------------------------------------
# subsets
# ---------------------------------------------------------------------------


def test_subset_by_labels():
    labels = np.array([5, 0, 9, 7, 5, 1, 9])
    images = np.arange(7) * 10
    x, y = data.subset_by_labels(images, labels, keep=[9, 5])
    np.testing.assert_array_equal(x, [0, 20, 40, 60])
    np.testing.assert_array_equal(y, [1, 0, 1, 0])
    x, y = data.subset_by_labels(images, labels, keep=[9, 5], remap=False)
    np.testing.assert_array_equal(y, [5, 9, 5, 9])
    x[0] = -1
    assert images[0] == 0  # a copy
    with pytest.raises(ValueError, match="distinct"):
        data.subset_by_labels(images, labels, keep=[5, 5])


def test_subset_by_labels_on_mnist(mnist):
    (_, train_y), _ = mnist
    images = np.arange(len(train_y))
    _, y = data.subset_by_labels(images, train_y, keep=[5, 6, 7, 8, 9])
    assert np.bincount(y).tolist() == TRAIN_COUNTS[5:]


def test_per_class_subset():
    labels = np.repeat(np.arange(3), [5, 8, 4])
    images = np.arange(len(labels))
    x, y = data.per_class_subset(images, labels, per_class=3, seed=1)
    assert np.bincount(y).tolist() == [3, 3, 3]
    np.testing.assert_array_equal(labels[x], y)  # pairs preserved
    x2, _ = data.per_class_subset(images, labels, per_class=3, seed=1)
    np.testing.assert_array_equal(x, x2)
    draws = {tuple(data.per_class_subset(images, labels, 3, seed=s)[0]) for s in range(5)}
    assert len(draws) > 1
    x_all, y_all = data.per_class_subset(images, labels, per_class=None)
    np.testing.assert_array_equal(y_all, labels)
    assert x_all is not images
    with pytest.raises(ValueError, match="class 2 has 4"):
        data.per_class_subset(images, labels, per_class=5)


def test_train_val_split():
    images = np.arange(20)
    labels = np.arange(20) % 4
    (tx, ty), (vx, vy) = data.train_val_split(images, labels, val_fraction=0.25, seed=0)
    assert len(vx) == 5 and len(tx) == 15
    assert sorted(np.concatenate([tx, vx]).tolist()) == images.tolist()
    np.testing.assert_array_equal(labels[vx], vy)
    (_, _), (vx2, _) = data.train_val_split(images, labels, n_val=5, seed=0)
    np.testing.assert_array_equal(vx, vx2)
    with pytest.raises(ValueError, match="exactly one"):
        data.train_val_split(images, labels)
