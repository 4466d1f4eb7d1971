"""Write the hostile checkpoints and .npy files of tests/fixtures/hostile/, without torch or numpy.

Usage:  python3 scripts/make_hostile_checkpoints.py [OUT_DIR]      (OUT_DIR defaults to tests/fixtures/hostile)

Every file is small (the zip bomb is about 1 MB, pkl_bomb 40 KB, the rest a few hundred bytes) and written deterministically
(fixed zip timestamps, no randomness): running the script again gives the same bytes. The tests in
crates/gradcam/tests/fuzz_parsers.rs load each one and expect a clear error, no panic, no abort, no hang and
a bounded peak allocation (the tests that build their inputs at run time, such as the 8 MiB of fake zip end
records, a memo bomb followed by zeros, deflated storages of 32 MiB, 1 GiB sparse copies of the valid fixtures,
float8 and integer weights, are there too). What each file is:

  stride_overflow.pth   zip; size (5,), stride (2**62,) over a 16-byte storage: (5-1)*2**62 overflowed (a panic)
  extent_overflow.pth   zip; the same over 8 floats: 5 elements fit, the extent 4 * 2**62 does not
  extent_wraps.pth      zip; size (2**34+1,), stride (2**30,): the extent 2**64 wraps to 0, then 64 GiB
  expand_2_36.pth       zip; torch.zeros(1).expand(1 << 36): size (2**36,), stride (0,), 256 GiB as f32
  expand_2_28.pth       zip; size (2**28,), stride (0,) over one float: a 1 KB file, 1 GiB in memory
  offset_past_end.pth   zip; offset 2**63-1 into a 4-element storage
  storage_short.pth     zip; the pickle says 1000 elements, data/0 holds 16 bytes
  zip_bomb.pth          zip; the pickle says 4 floats, data/0 deflates to 1 GiB of zeros
  pkl_bomb.pth          zip; data.pkl declares the pickle's 162 bytes but deflates to 40 MiB (zeros after it)
  pkl_declared_huge.pth zip; data.pkl declares 4 GiB - 1 bytes
  pkl_long1.pth         zip; data.pkl holds a LONG1 integer of 9 bytes (candle's pickle VM shifts past 64 bits)
  pkl_unicode_4g.pth    zip; data.pkl holds a BINUNICODE string announcing 0xffffffff bytes
  pkl_memo_bomb.pth     zip; data.pkl doubles a list 22 times through the memo (BINGET, BINGET, TUPLE2, BINPUT)
  pkl_deep.pth          zip; data.pkl (deflated) nests 200000 one-element tuples (a recursive drop overflows the stack)
  legacy_count_wraps.pth  legacy; a storage announces 2**64-1 elements (offset arithmetic wraps)
  legacy_stride.pth     legacy; size (3,), stride (2**62,)
  huge_shape.npy        128 bytes; shape (1, 3, 2**32, 2**32): the element count wraps to 0
  empty_overflow.npy    shape (0, 2**63, 4): no element, but 4 * 2**63 overflows (candle makes strides from it)
  bad_shape.npy         'shape': ) -- the shape has no opening parenthesis
  short_v2.npy          version 2.0 with the header length cut short
  st_shape_overflow.safetensors   shape [2**32, 2**32, 16]: the element count overflows
  st_empty_overflow.safetensors   shape [0, 2, 2**64-1]: safetensors accepts it, candle's strides overflow (a panic)
  st_offsets_past_end.safetensors data_offsets [0, 2**40] in a file of a few hundred bytes
  st_f4.safetensors     an F4 (MX4) tensor, which candle loads but cannot convert to f32
"""
import collections, io, json, os, pickle, struct, sys, types, zipfile, zlib

out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/hostile"
os.makedirs(out, exist_ok=True)

# fake torch modules so that pickle writes the right GLOBALs (as scripts/make_checkpoint_fixtures.py does)
torch = types.ModuleType("torch"); utils = types.ModuleType("torch._utils")
def _rebuild_tensor_v2(*a): pass
_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2
class FloatStorage: pass
FloatStorage.__module__ = "torch"
class ByteStorage: pass
ByteStorage.__module__ = "torch"
torch.FloatStorage = FloatStorage; torch.ByteStorage = ByteStorage; torch._utils = utils
sys.modules["torch"] = torch; sys.modules["torch._utils"] = utils

class Storage:
    def __init__(self, key, numel, cls=FloatStorage): self.key, self.numel, self.cls = key, numel, cls

class T:
    def __init__(self, storage, offset, size, stride): self.s, self.o, self.size, self.stride = storage, offset, size, stride
    def __reduce__(self):
        return (_rebuild_tensor_v2, (self.s, self.o, tuple(self.size), tuple(self.stride), False, collections.OrderedDict()))

class Pickler(pickle.Pickler):
    def __init__(self, f, legacy): super().__init__(f, protocol=2); self.legacy = legacy
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            pid = ("storage", obj.cls, obj.key, "cpu", obj.numel)
            return pid + (None,) if self.legacy else pid
        return None

def dump(obj, legacy=False):
    b = io.BytesIO(); Pickler(b, legacy).dump(obj); return b.getvalue()

def info(name, compress=zipfile.ZIP_STORED):
    i = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)); i.compress_type = compress; return i

def write_zip(fname, pkl, storages, compress=zipfile.ZIP_STORED):
    """storages: {key: bytes}; data.pkl stored as given (compressed with `compress`)."""
    with zipfile.ZipFile(f"{out}/{fname}", "w") as z:
        z.writestr(info("archive/data.pkl", compress), pkl)
        z.writestr(info("archive/byteorder"), "little")
        for k, data in storages.items():
            z.writestr(info(f"archive/data/{k}"), data)
        z.writestr(info("archive/version"), "3\n")

def floats(*v): return struct.pack(f"<{len(v)}f", *v)

def tensor_zip(fname, numel, data, offset, size, stride):
    s = Storage("0", numel)
    write_zip(fname, dump({"big": T(s, offset, size, stride)}), {"0": data})

# --- views that do not fit their storage
tensor_zip("stride_overflow.pth", 4, floats(1, 2, 3, 4), 0, [5], [1 << 62])
tensor_zip("extent_overflow.pth", 8, floats(*range(8)), 0, [5], [1 << 62])
tensor_zip("extent_wraps.pth", 4, floats(1, 2, 3, 4), 0, [(1 << 34) + 1], [1 << 30])
tensor_zip("expand_2_36.pth", 1, floats(0), 0, [1 << 36], [0])
tensor_zip("expand_2_28.pth", 1, floats(0), 0, [1 << 28], [0])
tensor_zip("offset_past_end.pth", 4, floats(1, 2, 3, 4), (1 << 63) - 1, [1], [1])
tensor_zip("storage_short.pth", 1000, floats(1, 2, 3, 4), 0, [4], [1])

# --- a storage entry that deflates to 1 GiB; the pickle needs 16 bytes of it
GIB = 1 << 30
c = zlib.compressobj(9, zlib.DEFLATED, -15)
chunk = bytes(1 << 24)
raw = b"".join(c.compress(chunk) for _ in range(GIB // len(chunk))) + c.flush()
pkl = dump({"w": T(Storage("0", 4), 0, [4], [1])})
# zipfile cannot take pre-compressed data: write the archive by hand (local headers, central directory, end)
def raw_zip(fname, entries):
    """entries: (name, method, crc, uncompressed size, payload)"""
    body, central = b"", b""
    for name, method, crc, usize, payload in entries:
        n = name.encode()
        off = len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(payload), usize, len(n), 0) + n + payload
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(payload), usize,
                               len(n), 0, 0, 0, 0, 0, off) + n
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(body), 0)
    open(f"{out}/{fname}", "wb").write(body + central + end)
crc = 0
for _ in range(GIB // len(chunk)):
    crc = zlib.crc32(chunk, crc)
raw_zip("zip_bomb.pth", [
    ("archive/data.pkl", 0, zlib.crc32(pkl), len(pkl), pkl),
    ("archive/data/0", 8, crc, GIB, raw),
])

# --- data.pkl declared as its pickle's length but deflating to 40 MiB more (zeros after STOP)
c = zlib.compressobj(9, zlib.DEFLATED, -15)
padded = pkl + bytes(40 << 20)
raw_zip("pkl_bomb.pth", [
    ("archive/data.pkl", 8, zlib.crc32(padded), len(pkl), c.compress(padded) + c.flush()),
    ("archive/data/0", 0, zlib.crc32(floats(1, 2, 3, 4)), 16, floats(1, 2, 3, 4)),
])
# --- data.pkl declaring 4 GiB - 1 (it holds the small pickle)
raw_zip("pkl_declared_huge.pth", [
    ("archive/data.pkl", 0, zlib.crc32(pkl), 0xFFFFFFFF, pkl),
    ("archive/data/0", 0, zlib.crc32(floats(1, 2, 3, 4)), 16, floats(1, 2, 3, 4)),
])

# --- hostile pickles for candle's VM (hand-written opcodes; protocol 2)
def zip_with_pickle(fname, body, compress=zipfile.ZIP_STORED):
    write_zip(fname, b"\x80\x02" + body + b".", {"0": floats(1, 2, 3, 4)}, compress)

# LONG1 of 9 bytes: candle computes `byte << (i * 8)` with i up to 8, a shift of 64
zip_with_pickle("pkl_long1.pth", b"}(X\x01\x00\x00\x00a\x8a\x09" + bytes(9) + b"u")
# BINUNICODE announcing 4 GiB: candle allocates the whole buffer before reading it
zip_with_pickle("pkl_unicode_4g.pth", b"X\xff\xff\xff\xff" + b"abc")
# memo doubling: [] put 0; 22 times (get 0, get 0, TUPLE2, put 0): 2**22 leaves, copied at every get and put
zip_with_pickle("pkl_memo_bomb.pth", b"]q\x00" + b"h\x00h\x00\x86q\x00" * 22 + b"}")
# 200000 nested one-element tuples: dropping (or cloning, or printing) recurses 200000 deep
zip_with_pickle("pkl_deep.pth", b")" + b"\x85" * 200_000 + b"}", zipfile.ZIP_DEFLATED)

# --- legacy files
MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
def legacy(fname, tensors, keys, storages):
    with open(f"{out}/{fname}", "wb") as f:
        f.write(MAGIC)
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps(dict(protocol_version=1001, little_endian=True, type_sizes=dict(short=2, int=4, long=4)), protocol=2))
        f.write(dump(tensors, True))
        f.write(pickle.dumps(keys, protocol=2))
        for count, data in storages:
            f.write(struct.pack("<Q", count)); f.write(data)
b = Storage("0", 4, ByteStorage)
legacy("legacy_count_wraps.pth", {"w": T(b, 0, [4], [1])}, ["0"], [((1 << 64) - 1, bytes(4))])
s = Storage("0", 4)
legacy("legacy_stride.pth", {"w": T(s, 0, [3], [1 << 62])}, ["0"], [(4, floats(1, 2, 3, 4))])

# --- .npy
def npy(fname, header, body=b"", version=1):
    h = header.encode()
    if version == 1:
        pre = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h))
    else:
        pre = b"\x93NUMPY\x02\x00" + struct.pack("<I", len(h))
    open(f"{out}/{fname}", "wb").write(pre + h + body)
h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 4294967296, 4294967296), }"
h += " " * (128 - 10 - len(h) - 1) + "\n"
npy("huge_shape.npy", h)
npy("empty_overflow.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 9223372036854775808, 4), }\n")
npy("bad_shape.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': ), }\n", floats(1))
open(f"{out}/short_v2.npy", "wb").write(b"\x93NUMPY\x02\x00\x10\x00")

# --- safetensors
def st(fname, header, data):
    h = json.dumps(header).encode(); h += b" " * ((8 - len(h) % 8) % 8)
    open(f"{out}/{fname}", "wb").write(struct.pack("<Q", len(h)) + h + data)
st("st_shape_overflow.safetensors", {"w": {"dtype": "F32", "shape": [1 << 32, 1 << 32, 16], "data_offsets": [0, 16]}}, floats(1, 2, 3, 4))
st("st_empty_overflow.safetensors", {"w": {"dtype": "F32", "shape": [0, 2, (1 << 64) - 1], "data_offsets": [0, 0]}}, b"")
st("st_offsets_past_end.safetensors", {"w": {"dtype": "F32", "shape": [1 << 38], "data_offsets": [0, 1 << 40]}}, floats(1, 2, 3, 4))
st("st_f4.safetensors", {"w": {"dtype": "F4", "shape": [8], "data_offsets": [0, 4]}}, bytes(4))
print("wrote", out)
