"""The variants tests/fuzz_files.py feeds to the file readers: truncated, mutated and hostile-header
versions of valid files, and the classic hostile files always tried (gzip bombs, absurd dims,
entry and nesting bombs, NaN, huge layer arguments). Pure functions of bytes and a ``random.Random``.
"""
import copy
import gzip
import json
import zlib


# ----------------------------------------------------------------------------- variants

HOSTILE_NUMBERS = [0, -1, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 + 1, -10**9, 10**30,
                   46341, 65536, 1e308, -1e308, 0.5, float("nan"), float("inf")]
HOSTILE_VALUES = HOSTILE_NUMBERS + [
    "fast", "", None, True, False, [], {}, [[[[]]]], "(16000,16000)f8", "test", "seed", "O", "|O", "<U100000000",
    "MT19937", "PCG64", "SFC64", "Philox", "__ndarray__", "model.", "optimizer.x.y", "x" * 10_000,
    list(range(2000)), {"__ndarray__": [1, 2], "dtype": "(16000,16000)f8"}, {"__ndarray__": 5, "dtype": "O"},
    {"bit_generator": "test", "state": {}}, [[2**40, 2**40]], {"type": "AvgPool2d", "kernel_size": 65536},
]


def mutate_bytes(content, rnd):
    content = bytearray(content)
    for _ in range(rnd.choice([1, 1, 2, 4, 16])):
        kind = rnd.choice(["flip", "flip", "set", "insert", "delete"])
        at = rnd.randrange(len(content) + 1)
        if kind == "insert":
            content[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.choice([1, 4, 100])))
        elif at < len(content):
            if kind == "flip":
                content[at] ^= 1 << rnd.randrange(8)
            elif kind == "set":
                content[at] = rnd.choice([0, 0xFF, 0x7F, 0x80, ord("["), ord('"'), ord("9")])
            else:
                del content[at:at + rnd.choice([1, 8, 1000])]
    return bytes(content)


def truncate(content, rnd):
    return content[:rnd.randrange(len(content))]


def _gunzipped(content):
    return gzip.decompress(content) if content[:2] == b"\x1f\x8b" else None


def idx_variant(content, kind, rnd):
    raw = _gunzipped(content)
    wrap = gzip.compress if raw is not None else (lambda b: b)
    raw = content if raw is None else raw
    if kind == "truncated":
        return truncate(content, rnd) if rnd.random() < 0.5 else wrap(truncate(raw, rnd))
    if kind == "mutated":
        return mutate_bytes(content, rnd) if rnd.random() < 0.3 else wrap(mutate_bytes(raw, rnd))
    return hostile_idx(raw, rnd)


ZEROS_64MB_GZ = None


def hostile_idx(raw, rnd):
    """A rewritten IDX header: absurd dims / type / ndim, and gzip bombs (a small .gz holding
    64 MB of zeros) under headers that declare more, less or far more than that."""
    ndim = rnd.choice([1, 2, 3, 4, 4, 0, 5, 255])
    type_code = rnd.choice([0x08, 0x08, 0x0C, 0x0E, 0x0A, 0xFF])
    dims = [rnd.choice([0, 1, 2, 28, 60000, 2**16, 2**28, 2**31, 2**32 - 1]) for _ in range(min(ndim, 8))]
    header = b"\0\0" + bytes([type_code, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims)
    shape_kind = rnd.choice(["payload", "short", "bomb", "bomb"])
    if shape_kind == "bomb":
        return gzip.compress(header) + _zeros_gz()  # a two-member gzip stream: header, then 64 MB of zeros
    body = raw[16:] if shape_kind == "payload" else raw[16:24]
    out = header + body
    return gzip.compress(out) if rnd.random() < 0.5 else out


def split_safetensors(content):
    length = int.from_bytes(content[:8], "little")
    return json.loads(content[8:8 + length]), content[8 + length:]


def join_safetensors(header, data):
    text = json.dumps(header).encode()  # allow_nan: NaN/Infinity literals are part of the test
    return len(text).to_bytes(8, "little") + text + data


def nodes(tree, path=()):
    """(path, value) of every node of a JSON tree, the root excluded."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        yield path + (key,), value
        yield from nodes(value, path + (key,))


def replace_at(tree, path, value):
    for key in path[:-1]:
        tree = tree[key]
    if value is KeyError and isinstance(tree, dict):
        del tree[path[-1]]
    else:
        tree[path[-1]] = None if value is KeyError else value


def hostile_safetensors(content, rnd):
    """The JSON header rewritten: a random node of the safetensors header or of the nnscratch
    header inside it replaced by a hostile value or deleted, an extra key, or a bomb of entries."""
    header, data = split_safetensors(content)
    inner = json.loads(header["__metadata__"]["nnscratch"])
    target = inner if rnd.random() < 0.6 else header
    for _ in range(rnd.choice([1, 1, 1, 2, 3])):
        choice = rnd.random()
        if choice < 0.08:
            header.update({f"e{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
                           for i in range(rnd.choice([100, 20_000]))})
        elif choice < 0.12:
            target[rnd.choice(["__ndarray__", "state", "model.x", "epoch"])] = copy.deepcopy(rnd.choice(HOSTILE_VALUES))
        else:
            path, _ = rnd.choice(list(nodes(target)))
            replace_at(target, path, copy.deepcopy(rnd.choice(HOSTILE_VALUES + [KeyError] * 6)))
    if "__metadata__" in header and isinstance(header["__metadata__"], dict):
        header["__metadata__"]["nnscratch"] = json.dumps(inner)
    return join_safetensors(header, data)


def safetensors_variant(content, kind, rnd):
    if kind == "truncated":
        return truncate(content, rnd)
    if kind == "mutated":
        return mutate_bytes(content, rnd)
    try:
        return hostile_safetensors(content, rnd)
    except (TypeError, KeyError, IndexError, AttributeError):  # the walk broke its own tree
        return mutate_bytes(content, rnd)


# ----------------------------------------------------------------------------- classic hostile files, always tried

def _zeros_gz():
    """A gzip member holding 64 MB of zeros (~64 kB compressed): the payload of the bombs."""
    global ZEROS_64MB_GZ
    if ZEROS_64MB_GZ is None:
        compressor = zlib.compressobj(9, 8, 31)  # wbits 31: a gzip container
        block = bytes(1 << 20)
        ZEROS_64MB_GZ = b"".join(compressor.compress(block) for _ in range(64)) + compressor.flush()
    return ZEROS_64MB_GZ


def _idx_header(dims, type_code=0x08):
    return b"\0\0" + bytes([type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def classic_idx():
    return {
        "bomb declaring MNIST's 47 MB, carrying 64 MB": gzip.compress(_idx_header((60000, 28, 28))) + _zeros_gz(),
        "bomb declaring 1 TiB": gzip.compress(_idx_header((2**20, 2**20))) + _zeros_gz(),
        "bomb declaring 2**62 float64": gzip.compress(_idx_header((2**31, 2**31), 0x0E)) + _zeros_gz(),
        "declares exactly the 256 MiB limit, carries 8 bytes": gzip.compress(_idx_header((2**28,)) + bytes(8)),
        "dims (0, 2**32-1, 2**32-1)": _idx_header((0, 2**32 - 1, 2**32 - 1)),
        "dims (0, 2**32-1, 2**32-1) gz": gzip.compress(_idx_header((0, 2**32 - 1, 2**32 - 1))),
        "declares 1000 bytes, carries 64 MB more": gzip.compress(_idx_header((1000,)) + bytes(1000)) + _zeros_gz(),
    }


def _edit(content, outer=None, inner=None, text=None):
    """`content` with its safetensors header and/or nnscratch header edited in place by the
    given functions, or its nnscratch header replaced by `text`."""
    header, data = split_safetensors(content)
    nnscratch = json.loads(header["__metadata__"]["nnscratch"])
    if inner:
        inner(nnscratch)
    if outer:
        outer(header)
    header["__metadata__"]["nnscratch"] = json.dumps(nnscratch) if text is None else text
    return join_safetensors(header, data)


def _set(path, value):
    def edit(tree):
        replace_at(tree, path, value)
    return edit


def classic_safetensors(reader, base):
    cases = {
        "NaN in the nnscratch header": _edit(base, inner=_set(("format_version",), float("nan"))),
        "20000 empty tensors": _edit(base, outer=lambda h: h.update(
            {f"e{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(20_000)})),
        "header of 2.5M empty lists (5 MB)": _edit(base, text='{"x": [' + ",".join(["[]"] * 2_500_000) + "]}"),
        "header of 3M floats (12 MB)": _edit(base, text='{"x": [' + ",".join(["0.5"] * 3_000_000) + "]}"),
        "outer header of 4M empty lists (16 MB, the library parses it)": _edit(base, outer=lambda h: h.update(
            x=[[]] * 4_000_000)),
        "header length 2**63": (2**63).to_bytes(8, "little") + base[8:],
        "tensor dtype as a list": _edit(base, outer=lambda h: h[next(k for k in h if k != "__metadata__")]
                                        .update(dtype=["F32"])),
    }
    group, layer = ("optimizer", "param_groups", 0), ("architecture",)
    edits = [  # (label, path in the nnscratch header, value)
        ('bit_generator "test" (NumPy self-test)', ("rng", "default", "bit_generator"), "test"),
        ('module bit_generator "seed"', ("rng", "modules", "4", "bit_generator"), "seed"),
        ('ndarray dtype "(16000,16000)f8"', ("rng", "default", "state", "state"),
         {"__ndarray__": [0], "dtype": "(16000,16000)f8"}),
        ("epoch -10**9", ("epoch",), -10**9),
        ('lr "fast"', group + ("lr",), "fast"),
        ("lr -1", group + ("lr",), -1),
        ("momentum -5", group + ("momentum",), -5),
        ("history of 1M losses", ("history", "batch_loss"), [0.5] * 1_000_000),
    ] if reader == "checkpoint" else [
        ("AvgPool2d(46341, padding=23170)", layer + (3, "args"),
         {"kernel_size": [46341, 46341], "stride": [1, 1], "padding": [23170, 23170]}),
        ("AvgPool2d(65536)", layer + (3, "args", "kernel_size"), [65536, 65536]),
        ("Dense with 2**31 inputs", layer + (6, "args", "in_features"), 2**31),
        ("Conv2d with 10**6 filters", layer + (0, "args", "out_channels"), 10**6),
        ("MaxPool2d kernel 2**63-1", layer + (2, "args", "kernel_size"), [2**63 - 1, 2]),
    ]
    cases.update({label: _edit(base, inner=_set(path, value)) for label, path, value in edits})
    if reader == "checkpoint":
        cases["no rng key"] = _edit(base, inner=lambda h: h.pop("rng"))
    return cases
