"""Write small checkpoints in PyTorch's three on-disk layouts, without torch, for the loader tests:
  tests/fixtures/ckpt_zip.pth      torch.save zip format (data.pkl + data/<key>), with non-contiguous views
  tests/fixtures/ckpt_legacy.pth   the legacy (pre-1.6) stream format, same tensors
  tests/fixtures/ckpt.safetensors  safetensors, same tensors (contiguous)
  tests/fixtures/ckpt_expected.npz-like .npy files: the values numpy's strided views give
The pickles follow torch.serialization exactly: protocol 2, persistent ids ('storage', <torch.FloatStorage>,
key, 'cpu', numel[, None]), tensors rebuilt by torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
requires_grad, OrderedDict()), the state dict a collections.OrderedDict.
"""
import collections, io, json, os, pickle, struct, sys, types, zipfile
import numpy as np

out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
os.makedirs(out, exist_ok=True)

# fake torch modules so that pickle writes the right GLOBALs
torch = types.ModuleType("torch"); utils = types.ModuleType("torch._utils")
def _rebuild_tensor_v2(*a): pass
_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2
class FloatStorage: pass
FloatStorage.__module__ = "torch"
torch.FloatStorage = FloatStorage; torch._utils = utils
sys.modules["torch"] = torch; sys.modules["torch._utils"] = utils

class Storage:
    def __init__(self, key, data): self.key, self.data = key, np.ascontiguousarray(data, dtype="<f4").ravel()

class T:
    def __init__(self, storage, offset, size, stride): self.s, self.o, self.size, self.stride = storage, offset, size, stride
    def __reduce__(self):
        return (_rebuild_tensor_v2, (self.s, self.o, tuple(self.size), tuple(self.stride), False, collections.OrderedDict()))
    def numpy(self):
        return np.lib.stride_tricks.as_strided(self.s.data[self.o:], shape=self.size, strides=[4 * s for s in self.stride]).copy()

base = np.arange(24, dtype=np.float32) * 0.5 - 3.0
s0 = Storage("0", base)
s1 = Storage("1", np.linspace(-1, 1, 6, dtype=np.float32))
tensors = collections.OrderedDict([
    ("conv.weight", T(s0, 0, [2, 3, 2, 2], [12, 4, 2, 1])),          # contiguous
    ("conv.weight_t", T(s0, 0, [3, 2, 2, 2], [4, 12, 1, 2])),        # permuted (channels-last-like)
    ("fc.weight", T(s1, 0, [3, 2], [1, 3])),                          # transposed
    ("fc.bias", T(s0, 5, [3], [7])),                                  # offset and stride
])

class ZipPickler(pickle.Pickler):
    def __init__(self, f, legacy): super().__init__(f, protocol=2); self.legacy = legacy
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            pid = ("storage", FloatStorage, obj.key, "cpu", obj.data.size)
            return pid + (None,) if self.legacy else pid
        return None

def dump(obj, legacy):
    b = io.BytesIO(); ZipPickler(b, legacy).dump(obj); return b.getvalue()

storages = [s0, s1]
# zip format
with zipfile.ZipFile(f"{out}/ckpt_zip.pth", "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", dump(tensors, False))
    z.writestr("archive/byteorder", "little")
    for s in storages: z.writestr(f"archive/data/{s.key}", s.data.tobytes())
    z.writestr("archive/version", "3\n")
# legacy format
with open(f"{out}/ckpt_legacy.pth", "wb") as f:
    f.write(pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2))
    f.write(pickle.dumps(1001, protocol=2))
    f.write(pickle.dumps(dict(protocol_version=1001, little_endian=True, type_sizes=dict(short=2, int=4, long=4)), protocol=2))
    f.write(dump(tensors, True))
    f.write(pickle.dumps([s.key for s in storages], protocol=2))
    for s in storages:
        f.write(struct.pack("<q", s.data.size)); f.write(s.data.tobytes())
# safetensors
header, blob = {}, b""
for name, t in tensors.items():
    a = t.numpy().astype("<f4"); header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [len(blob), len(blob) + a.nbytes]}; blob += a.tobytes()
h = json.dumps(header).encode(); h += b" " * ((8 - len(h) % 8) % 8)
open(f"{out}/ckpt.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + blob)
# expected values
for name, t in tensors.items():
    np.save(f"{out}/expected.{name}.npy", t.numpy())
print("wrote", out)
