//! Hostile checkpoints and .npy files: the parsers must never panic, abort or hang, and never allocate much more
//! than the file holds. Two halves:
//!  * regression tests, one per defect found, on the files of tests/fixtures/hostile/ (written by
//!    scripts/make_hostile_checkpoints.py): each must give an error that names the problem;
//!  * a proptest harness, one property per parser (PyTorch zip, PyTorch legacy, safetensors, .npy, and candle's
//!    pickle VM behind the dry run), on mutations of the valid fixtures and on generated files.
//!
//! A counting global allocator measures the peak heap of each parse. Every test takes `LOCK` so that the
//! measurements of parallel tests do not mix.

use gradcam::checkpoint::Checkpoint;
use gradcam::npy::Array;
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        CURRENT.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            if new >= l.size() {
                grew(new - l.size());
            } else {
                CURRENT.fetch_sub(l.size() - new, Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `f`; its result and the peak heap it added.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    let r = f();
    (r, PEAK.load(Relaxed).saturating_sub(base))
}

const MIB: usize = 1 << 20;

/// The most a parse of `len` bytes may allocate at its peak. The pickle dry run lets candle's VM take at most
/// 128 bytes per pickle byte plus 4 MiB (a real state dict takes 40 per byte; its vectors double); the tensors
/// made hold at most 4 times the bytes of their storages plus 1 MiB, as f32 (4 times that for byte storages);
/// the rest is small. The hostile files and the fuzz inputs are a few KiB: the constant dominates.
fn allowed(len: usize) -> usize {
    256 * len + 16 * MIB
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

fn hostile(name: &str) -> PathBuf {
    fixture("hostile").join(name)
}

/// Load a hostile checkpoint: it must fail, within the allocation bound, with a message holding every word of
/// `words` (and the file name).
fn refused(name: &str, words: &[&str]) -> String {
    let _g = lock();
    let path = hostile(name);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    let (r, peak) = measured(|| Checkpoint::load(&path));
    let e = r.expect_err(name).to_string();
    assert!(e.contains(name), "{name}: the error does not name the file: {e}");
    for w in words {
        assert!(e.contains(w), "{name}: the error does not say {w:?}: {e}");
    }
    assert!(peak <= allowed(len), "{name}: peak allocation {peak} bytes for a file of {len} bytes: {e}");
    e
}

fn npy_refused(name: &str, words: &[&str]) -> String {
    let _g = lock();
    let path = hostile(name);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    let (r, peak) = measured(|| Array::read(&path));
    let e = r.expect_err(name).to_string();
    for w in words {
        assert!(e.contains(w), "{name}: the error does not say {w:?}: {e}");
    }
    assert!(peak <= allowed(len), "{name}: peak allocation {peak} bytes for a file of {len} bytes: {e}");
    e
}

// ---------------------------------------------------------------------------------------------------------------
// Regression tests, one per defect

#[test]
fn stride_whose_extent_overflows_is_refused() {
    // size (5,) over 4 elements: refused by its element count; over 8 elements, by its extent 4 * 2^62
    refused("stride_overflow.pth", &["`big`", "stride [4611686018427387904]", "5 elements, more than its storage"]);
    refused("extent_overflow.pth", &["`big`", "stride [4611686018427387904]", "storage 0 of 8 elements", "overflows"]);
    refused("legacy_stride.pth", &["`w`", "stride [4611686018427387904]", "reaches element 9223372036854775808"]);
}

#[test]
fn extent_that_wraps_to_zero_is_refused() {
    // (2^34 + 1) elements over a storage of 4: refused before the extent is even computed
    refused("extent_wraps.pth", &["`big`", "17179869185 elements", "storage 0 of 4 elements"]);
}

#[test]
fn broadcast_views_larger_than_their_storage_are_refused() {
    for f in ["expand_2_36.pth", "expand_2_28.pth"] {
        refused(f, &["`big`", "stride [0]", "more than its storage holds", "storage 0 of 1 elements"]);
    }
}

#[test]
fn views_past_the_end_of_their_storage_are_refused() {
    refused("offset_past_end.pth", &["`big`", "offset 9223372036854775807", "past the end"]);
    refused("storage_short.pth", &["`big`", "holds 16 bytes", "1000 elements"]);
}

#[test]
fn storage_entry_is_inflated_no_further_than_needed() {
    // data/0 deflates to 1 GiB; the pickle needs 16 bytes of it. The whole file then loads (4 zeros), having
    // inflated a few KiB at most.
    let _g = lock();
    let path = hostile("zip_bomb.pth");
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    let (r, peak) = measured(|| Checkpoint::load(&path));
    let c = r.unwrap();
    assert_eq!(c.tensors["w"].dims(), &[4]);
    assert!(peak <= 16 * len + MIB, "peak allocation {peak} bytes for a file of {len} bytes");
}

#[test]
fn data_pkl_is_read_no_further_than_declared() {
    refused("pkl_bomb.pth", &["data.pkl", "inflates to more than the 162 bytes it declares"]);
    refused("pkl_declared_huge.pth", &["data.pkl", "declares 4294967295 bytes", "at most 67108864"]);
}

#[test]
fn hostile_pickles_are_refused_before_candle_runs_them() {
    refused("pkl_long1.pth", &["data.pkl pickle", "integer of 9 bytes"]);
    refused("pkl_unicode_4g.pth", &["data.pkl pickle", "4294967295 bytes", "4 left"]);
    refused("pkl_memo_bomb.pth", &["data.pkl pickle", "MiB", "memo"]);
    refused("pkl_deep.pth", &["data.pkl pickle", "nested more than 256 deep"]);
}

#[test]
fn legacy_storage_count_that_wraps_is_refused() {
    refused("legacy_count_wraps.pth", &["storage 0", "18446744073709551615 elements", "pickle says 4"]);
}

#[test]
fn npy_element_count_that_wraps_is_refused() {
    npy_refused("huge_shape.npy", &["huge_shape.npy", "[1, 3, 4294967296, 4294967296]", "overflows"]);
    // no element, but the strides candle would make of it overflow
    npy_refused("empty_overflow.npy", &["empty_overflow.npy", "[0, 9223372036854775808, 4]", "overflows"]);
}

#[test]
fn malformed_npy_headers_are_refused() {
    npy_refused("bad_shape.npy", &["bad_shape.npy", "shape )", "expected a tuple"]);
    npy_refused("short_v2.npy", &["short_v2.npy", "10 bytes", "version 2"]);
    let _g = lock();
    let v1 = |h: &[u8], body: &[u8]| [&b"\x93NUMPY\x01\x00"[..], &(h.len() as u16).to_le_bytes(), h, body].concat();
    let f4 = |shape: &str| format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}").into_bytes();
    for (bytes, want) in [
        (b"\x93NUMPY\x01\x00\xff\xff{}".to_vec(), "announces 65535 bytes"),
        (v1(b"{'shape': \xc3(", b""), "not text"),
        (v1(b"{'descr': '<f4', 'sh", b""), "no 'shape'"),
        (v1(b"{'descr': '<i8', 'shape': (1,)}", &[0; 8]), "dtype '<i8'"),
        (v1(&f4("\u{e9})"), b""), "shape \u{e9})"),
        (v1(&f4("(2,"), b""), "expected a tuple"),
        (v1(&f4("(2, -1)"), b""), "dimension -1"),
        (v1(&f4("(2,)"), &[0; 9]), "9 data bytes"),
        (v1(&f4("(2,)"), &[0; 7]), "truncated"),
        (v1(&f4("(4294967296, 4294967296)"), b""), "overflows"),
        (b"\x93NUMPY\x07\x00".to_vec(), "version 7"),
    ] {
        let e = Array::parse(&bytes).expect_err(want);
        assert!(e.contains(want), "{want}: {e}");
    }
}

#[test]
fn malformed_safetensors_are_refused() {
    refused("st_shape_overflow.safetensors", &["tensor `w`", "shape [4294967296, 4294967296, 16]", "multiply past"]);
    // no element, but candle's strides 2 * (2^64 - 1) overflow: a panic in candle before the check
    refused("st_empty_overflow.safetensors", &["tensor `w`", "shape [0, 2, 18446744073709551615]", "multiply past"]);
    refused("st_offsets_past_end.safetensors", &["bad safetensors file"]);
    refused("st_f4.safetensors", &["tensor `w` is stored as F4", "expected float32"]);
    // the shape check leaves the rest of a real header alone: metadata, tensors of no element
    let _g = lock();
    let h = br#"{"__metadata__":{"format":"pt"},"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let b = [&(h.len() as u64).to_le_bytes()[..], h, &[0; 8]].concat();
    let c = Checkpoint::from_bytes("meta.safetensors", &b).unwrap();
    assert_eq!((c.tensors["w"].dims(), c.tensors["e"].dims()), (&[2][..], &[0, 3][..]));
}

#[test]
fn devices_and_directories_are_refused_not_read_forever() {
    let _g = lock();
    if std::path::Path::new("/dev/zero").exists() {
        let e = Checkpoint::load("/dev/zero").unwrap_err().to_string();
        assert!(e.contains("/dev/zero") && e.contains("device"), "{e}");
        let e = Array::read("/dev/zero").unwrap_err().to_string();
        assert!(e.contains("device"), "{e}");
    }
    let e = Checkpoint::load(fixture("hostile")).unwrap_err().to_string();
    assert!(e.contains("directory"), "{e}");
}

#[test]
fn nesting_up_to_the_limit_still_loads() {
    // the state dict of the zip fixture, plus an entry nested 250 deep: the dry run lets it through, and candle
    // builds and drops it on a test thread's stack
    let _g = lock();
    let mut p = Pickle::new();
    p.op(b"}");
    p.str("deep");
    p.op(b")");
    p.0.extend(std::iter::repeat_n(0x85u8, 250));
    p.op(b"s");
    let t = GenTensor { class: "FloatStorage", key: 0, numel: 4, offset: 0, size: vec![4], stride: vec![1] };
    p.tensor_item("w", &t, false);
    p.op(b"s.");
    let bytes = zip_of(&[("archive/data.pkl", &p.0), ("archive/data/0", &[0u8; 16])]);
    let c = Checkpoint::from_bytes("deep.pth", &bytes).unwrap();
    assert_eq!(c.tensors["w"].dims(), &[4]);
}

#[test]
fn many_views_of_one_storage_cannot_multiply_it() {
    // 64 distinct views of one 64 KiB storage (each within it) would make 16 times its bytes: refused; identical
    // views share one tensor and are accepted
    let _g = lock();
    let numel = 16384u64;
    for (distinct, ok) in [(true, false), (false, true)] {
        let mut p = Pickle::new();
        p.op(b"}");
        for i in 0..64u64 {
            let off = if distinct { i } else { 0 };
            let t = GenTensor {
                class: "FloatStorage",
                key: 0,
                numel,
                offset: off,
                size: vec![numel - 64],
                stride: vec![1],
            };
            p.tensor_item(&format!("t{i}"), &t, false);
            p.op(b"s");
        }
        p.op(b".");
        let data = vec![0u8; numel as usize * 4];
        let bytes = zip_of(&[("archive/data.pkl", &p.0), ("archive/data/0", &data)]);
        let (r, peak) = measured(|| Checkpoint::from_bytes("views.pth", &bytes));
        assert_eq!(r.is_ok(), ok, "distinct views {distinct}: {:?}", r.err());
        if let Err(e) = r {
            assert!(e.to_string().contains("overlapping views"), "{e}");
        }
        assert!(peak <= 16 * bytes.len() + MIB, "distinct {distinct}: peak {peak} for {} bytes", bytes.len());
    }
}

#[test]
fn fake_zip_end_records_cannot_make_reading_quadratic() {
    // A storage of 8 MiB made of fake end-of-directory records (each pointing at a directory at byte 0). With the
    // real directory intact the file loads; with its second entry broken, the zip crate tries every earlier
    // record, searching the file again for each (quadratic: minutes for 8 MiB), until the reading budget stops it.
    let _g = lock();
    let fake: Vec<u8> =
        [&0x06054b50u32.to_le_bytes()[..], &[0, 0, 0, 0, 1, 0, 1, 0], &46u32.to_le_bytes(), &[0; 6]].concat();
    let data = fake.repeat((8 << 20) / fake.len());
    let data = &data[..data.len() / 4 * 4];
    let t = GenTensor {
        class: "FloatStorage",
        key: 0,
        numel: (data.len() / 4) as u64,
        offset: 0,
        size: vec![4],
        stride: vec![1],
    };
    let pkl = state_dict(&[t], false);
    let mut b = zip_of(&[("archive/data.pkl", &pkl), ("archive/data/0", data)]);
    let c = Checkpoint::from_bytes("fake_ends.pth", &b).unwrap();
    assert_eq!(c.tensors["t0"].dims(), &[4]);
    let second = b.len() - 22 - (46 + "archive/data/0".len());
    assert_eq!(&b[second..second + 4], b"PK\x01\x02");
    b[second] = b'X';
    let (r, peak) = measured(|| Checkpoint::from_bytes("fake_ends.pth", &b));
    let e = r.unwrap_err().to_string();
    // the reading budget (not the clock) is what ended it: the bound on the work is deterministic
    assert!(e.contains("read 4 times the file's size"), "{e}");
    assert!(peak <= allowed(b.len()), "peak {peak} for {} bytes", b.len());
}

#[test]
fn zip_directories_that_do_not_fit_are_refused() {
    let _g = lock();
    let pkl = state_dict(&[], false);
    let good = zip_of(&[("archive/data.pkl", &pkl)]);
    let n = good.len();
    for (what, edit, want) in [
        ("no end record", (n - 22, 0xffu8), "no end-of-central-directory record"),
        ("entries", (n - 12, 0x10), "declares 17 entries in 62 bytes"),
        ("directory offset", (n - 6, 0x01), "before its end record"),
    ] {
        let mut b = good.clone();
        b[edit.0] ^= edit.1;
        let (r, peak) = measured(|| Checkpoint::from_bytes("dir.pth", &b));
        let e = r.unwrap_err().to_string();
        assert!(e.contains(want), "{what}: {e}");
        assert!(peak <= allowed(b.len()));
    }
}

/// A pickle `{"bomb": ...}` that puts a string of `kib` KiB in the memo and doubles it `rounds` times through
/// the memo (BINGET, TUPLE2 with the object on the stack, BINPUT), then STOP.
fn memo_bomb(kib: usize, rounds: usize) -> Vec<u8> {
    let mut p = Pickle::new();
    p.op(b"}").str("bomb").str(&"x".repeat(kib << 10)).op(b"q\x00");
    for _ in 0..rounds {
        p.op(b"h\x00\x86q\x00");
    }
    p.op(b"s.");
    p.0
}

#[test]
fn pickle_budget_comes_from_the_pickle_not_the_bytes_after_it() {
    // A 256 KiB string doubled 7 times (32 MiB of copies, more than the 36 MiB its 256 KiB pickle allows once
    // copied at every BINGET and BINPUT), followed by 8 MiB of zeros: the zeros used to earn the pickle 1 GiB.
    let _g = lock();
    let pkl = memo_bomb(256, 7);
    let padded = [&pkl[..], &vec![0u8; 8 << 20]].concat();
    let zip = zip_of(&[("archive/data.pkl", &padded), ("archive/data/0", &[0u8; 16])]);
    let (r, peak) = measured(|| Checkpoint::from_bytes("junk_after_stop.pth", &zip));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("junk_after_stop.pth") && e.contains("data.pkl pickle") && e.contains("memo"), "{e}");
    assert!(peak <= zip.len() + 16 * MIB, "peak {peak} for {} bytes", zip.len());
    // legacy: the rest of the file (here an 8 MiB storage) used to count as the state dict's pickle
    let legacy = legacy_of(&pkl, &[(0, 2 << 20, vec![0u8; 8 << 20])]);
    let (r, peak) = measured(|| Checkpoint::from_bytes("junk_after_stop.pth", &legacy));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("state dict pickle") && e.contains("memo"), "{e}");
    assert!(peak <= legacy.len() + 16 * MIB, "peak {peak} for {} bytes", legacy.len());
    // the same pickle with 3 rounds (4 MiB of copies) is within what its length allows
    let small = zip_of(&[("archive/data.pkl", &memo_bomb(256, 3)), ("archive/data/0", &[0u8; 16])]);
    let e = Checkpoint::from_bytes("small.pth", &small).unwrap_err().to_string();
    assert!(e.contains("holds no tensors"), "{e}");
}

#[test]
fn compressed_storages_inflate_no_more_than_a_bound_of_the_file() {
    // 8 Mi zero floats (32 MiB) deflate to 32 KiB: more than 16 times the file plus 16 MiB, refused before it is
    // inflated; stored, or 2 Mi floats (8 MiB) deflated, it loads
    let _g = lock();
    let numel = 8u64 << 20;
    let t = GenTensor { class: "FloatStorage", key: 0, numel, offset: 0, size: vec![numel], stride: vec![1] };
    let pkl = state_dict(&[t], false);
    let data = vec![0u8; numel as usize * 4];
    let z = zip_deflated(&[("archive/data.pkl", &pkl, false), ("archive/data/0", &data, true)]);
    assert!(z.len() < 100_000, "{}", z.len());
    let (r, peak) = measured(|| Checkpoint::from_bytes("deflated.pth", &z));
    let e = r.unwrap_err().to_string();
    for w in ["deflated.pth", "archive/data/0", "inflates to 33554432 bytes", "16 times its size plus 16 MiB"] {
        assert!(e.contains(w), "{w}: {e}");
    }
    assert!(peak <= MIB, "peak {peak}");
    let numel = 2u64 << 20;
    let t = GenTensor { class: "FloatStorage", key: 0, numel, offset: 0, size: vec![numel], stride: vec![1] };
    let pkl = state_dict(&[t], false);
    let data = vec![0u8; numel as usize * 4];
    let z = zip_deflated(&[("archive/data.pkl", &pkl, true), ("archive/data/0", &data, true)]);
    assert_eq!(Checkpoint::from_bytes("ok.pth", &z).unwrap().tensors["t0"].dims(), &[numel as usize]);
}

/// A copy of the fixture `name`, grown to `len` bytes (a sparse file: zeros that take no disk).
fn grown(name: &str, len: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gradcam-grown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("grown-{}", name.replace('/', "-")));
    std::fs::copy(fixture(name), &p).unwrap();
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len).unwrap();
    p
}

#[test]
fn file_sizes_are_checked_before_the_rest_is_read() {
    // `truncate -s 1G` of valid small files: refused from their head (or tail), without reading the GiB
    let _g = lock();
    const GIB: u64 = 1 << 30;
    let cases: [(&str, &[&str], usize); 4] = [
        ("ckpt.safetensors", &["bad safetensors file", "the file has 1073741824", "expected exactly"], MIB),
        ("ckpt_zip.pth", &["not a complete zip file", "last 65557 bytes"], MIB),
        ("ckpt_legacy.pth", &["storages they declare take", "the file has 1073741824"], 20 * MIB),
        ("expected.conv.weight.npy", &["not a supported .npy file", "data bytes", "needs"], MIB),
    ];
    for (name, words, most) in cases {
        let p = grown(name, GIB);
        let (r, peak) = measured(|| {
            if name.ends_with(".npy") {
                Array::read(&p).map(|_| ())
            } else {
                Checkpoint::load(&p).map(|_| ())
            }
        });
        let e = r.unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()), "{name}: {e}");
        for w in words {
            assert!(e.contains(w), "{name}: {w:?}: {e}");
        }
        assert!(peak <= most, "{name}: peak {peak} bytes before refusing");
        std::fs::remove_file(&p).unwrap();
    }
    // one byte too many or too few is refused too, before the parse
    for (name, delta) in [("ckpt.safetensors", 1i64), ("ckpt.safetensors", -1), ("expected.conv.weight.npy", 1)] {
        let len = std::fs::metadata(fixture(name)).unwrap().len();
        let p = grown(name, (len as i64 + delta) as u64);
        let e = if name.ends_with(".npy") {
            Array::read(&p).unwrap_err().to_string()
        } else {
            Checkpoint::load(&p).unwrap_err().to_string()
        };
        assert!(e.contains(&format!("{}", len as i64 + delta)) || e.contains("data bytes"), "{name} {delta}: {e}");
        std::fs::remove_file(&p).unwrap();
    }
    // a legacy file with bytes after its storages
    let b = [std::fs::read(fixture("ckpt_legacy.pth")).unwrap(), vec![0; 3]].concat();
    let e = Checkpoint::from_bytes("extra.pth", &b).unwrap_err().to_string();
    assert!(e.contains("3 more, expected none"), "{e}");
}

#[test]
fn float8_and_other_unsupported_dtypes_are_refused_by_name() {
    let _g = lock();
    let want = "tensor `_fc.weight` is stored as float8_e4m3fn, which gradcam does not read; expected float32, \
                float16, bfloat16 or float64";
    // torch.float8_e4m3fn through a typed storage, as the tester wrote it
    let mut p = Pickle::new();
    p.op(b"}");
    let t = GenTensor { class: "Float8_e4m3fnStorage", key: 0, numel: 4, offset: 0, size: vec![4], stride: vec![1] };
    p.tensor_item("_fc.weight", &t, false).op(b"s.");
    let z = zip_of(&[("archive/data.pkl", &p.0), ("archive/data/0", &[0u8; 4])]);
    let e = Checkpoint::from_bytes("f8.pth", &z).unwrap_err().to_string();
    assert!(e.contains("f8.pth") && e.contains(want), "{e}");
    // as torch >= 2.1 writes it: _rebuild_tensor_v3 with the dtype 7th
    let mut p = Pickle::new();
    p.op(b"}").str("_fc.weight").global("torch._utils", "_rebuild_tensor_v3").op(b"((");
    p.str("storage").global("torch", "UntypedStorage").str("0").str("cpu").int(4).op(b"tQ");
    p.int(0).ints(&[4]).ints(&[1]).op(b"\x89").global("collections", "OrderedDict").op(b")R");
    p.global("torch", "float8_e4m3fn").op(b"}tRs.");
    let z = zip_of(&[("archive/data.pkl", &p.0), ("archive/data/0", &[0u8; 4])]);
    let e = Checkpoint::from_bytes("f8v3.pth", &z).unwrap_err().to_string();
    assert!(e.contains("f8v3.pth") && e.contains(want), "{e}");
    // safetensors F8_E4M3
    let h = br#"{"_fc.weight":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}"#;
    let b = [&(h.len() as u64).to_le_bytes()[..], h, &[0; 4]].concat();
    let e = Checkpoint::from_bytes("f8.safetensors", &b).unwrap_err().to_string();
    assert!(e.contains("tensor `_fc.weight` is stored as float8_e4m3fn") && e.contains("expected float32"), "{e}");
    // a quantized tensor is not dropped silently either
    let mut p = Pickle::new();
    p.op(b"}").str("q").global("torch._utils", "_rebuild_qtensor").op(b")Rs.");
    let z = zip_of(&[("archive/data.pkl", &p.0)]);
    let e = Checkpoint::from_bytes("q.pth", &z).unwrap_err().to_string();
    assert!(e.contains("tensor `q`") && e.contains("_rebuild_qtensor"), "{e}");
}

/// A zip checkpoint of `w` (4 elements of `class`, the bytes `data`) and an int64 `num_batches_tracked`.
fn weights_zip(class: &'static str, data: &[u8]) -> Vec<u8> {
    let mut p = Pickle::new();
    p.op(b"}");
    let t = GenTensor { class, key: 0, numel: 4, offset: 0, size: vec![4], stride: vec![1] };
    p.tensor_item("w", &t, false).op(b"s");
    let t = GenTensor { class: "LongStorage", key: 1, numel: 1, offset: 0, size: vec![], stride: vec![] };
    p.tensor_item("num_batches_tracked", &t, false).op(b"s.");
    zip_of(&[("archive/data.pkl", &p.0), ("archive/data/0", data), ("archive/data/1", &7u64.to_le_bytes())])
}

fn get_w(name: &str, bytes: &[u8]) -> Result<candle_core::Tensor, String> {
    let c = Checkpoint::from_bytes(name, bytes).map_err(|e| e.to_string())?;
    let w = gradcam::weights::Weights::File(std::sync::Arc::new(c));
    let vb = w.var_builder(&candle_core::Device::Cpu);
    vb.get(4, "w").map_err(|e| e.to_string())
}

#[test]
fn weights_stored_as_integers_are_refused_where_the_model_asks_for_them() {
    let _g = lock();
    for (class, dtype, data) in [
        ("CharStorage", "int8", vec![1u8, 2, 3, 4]),
        ("ShortStorage", "int16", vec![1u8; 8]),
        ("BoolStorage", "bool", vec![1u8, 0, 1, 0]),
        ("FloatStorage", "float32", [1f32, 2., 3., 4.].iter().flat_map(|v| v.to_le_bytes()).collect()),
    ] {
        let z = weights_zip(class, &data);
        let c = Checkpoint::from_bytes("ints.pth", &z).unwrap();
        assert_eq!((c.dtypes["w"], c.dtypes["num_batches_tracked"]), (dtype, "int64"));
        let r = get_w("ints.pth", &z);
        if dtype == "float32" {
            assert_eq!(r.unwrap().to_vec1::<f32>().unwrap(), [1., 2., 3., 4.]);
        } else {
            let e = r.unwrap_err();
            let want = format!("ints.pth: tensor `w` is stored as {dtype}; expected floating-point weights");
            assert!(e.contains(&want), "{class}: {e}");
        }
    }
    // safetensors loads integers too (as it did not), and the same check refuses them
    for (dtype, name, bytes) in [("I8", "int8", 4), ("BOOL", "bool", 4), ("U8", "uint8", 4), ("I64", "int64", 32)] {
        let h = format!(r#"{{"w":{{"dtype":"{dtype}","shape":[4],"data_offsets":[0,{bytes}]}}}}"#);
        let b = [&(h.len() as u64).to_le_bytes()[..], h.as_bytes(), &vec![1; bytes]].concat();
        assert_eq!(Checkpoint::from_bytes("ints.safetensors", &b).unwrap().dtypes["w"], name);
        let e = get_w("ints.safetensors", &b).unwrap_err();
        assert!(e.contains(&format!("ints.safetensors: tensor `w` is stored as {name}")), "{e}");
    }
}

#[test]
fn weights_that_are_not_finite_are_refused_with_the_first_bad_value() {
    let _g = lock();
    for (v, shown) in [(f32::INFINITY, "inf"), (f32::NEG_INFINITY, "-inf"), (f32::NAN, "NaN")] {
        let data: Vec<u8> = [1f32, 2., 3., v].iter().flat_map(|v| v.to_le_bytes()).collect();
        let e = get_w("inf.pth", &weights_zip("FloatStorage", &data)).unwrap_err();
        let want = format!("inf.pth: tensor `w` holds {shown} at element 3; expected finite weights");
        assert!(e.contains(&want), "{e}");
    }
    // float16's largest value is finite; 65520 rounds to inf in float16 but is read exactly as f32
    let data: Vec<u8> = [half::f16::MAX; 4].iter().flat_map(|v| v.to_le_bytes()).collect();
    get_w("f16.pth", &weights_zip("HalfStorage", &data)).unwrap();
}

// ---------------------------------------------------------------------------------------------------------------
// Builders: pickles, zip files, legacy files

struct Pickle(Vec<u8>);

#[derive(Clone, Debug)]
struct GenTensor {
    class: &'static str,
    key: u8,
    numel: u64,
    offset: u64,
    size: Vec<u64>,
    stride: Vec<u64>,
}

impl Pickle {
    fn new() -> Pickle {
        Pickle(b"\x80\x02".to_vec())
    }
    fn op(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn int(&mut self, v: u64) -> &mut Self {
        if v < 1 << 31 {
            self.op(b"J").op(&(v as u32).to_le_bytes())
        } else {
            self.op(b"\x8a\x08").op(&v.to_le_bytes())
        }
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.op(b"X").op(&(s.len() as u32).to_le_bytes()).op(s.as_bytes())
    }
    fn global(&mut self, module: &str, class: &str) -> &mut Self {
        self.op(format!("c{module}\n{class}\n").as_bytes())
    }
    fn ints(&mut self, v: &[u64]) -> &mut Self {
        self.op(b"(");
        for &x in v {
            self.int(x);
        }
        self.op(b"t")
    }
    /// Push `name` and the pickled tensor (for SETITEM).
    fn tensor_item(&mut self, name: &str, t: &GenTensor, legacy: bool) -> &mut Self {
        self.str(name).global("torch._utils", "_rebuild_tensor_v2").op(b"((");
        self.str("storage").global("torch", t.class).str(&t.key.to_string()).str("cpu").int(t.numel);
        if legacy {
            self.op(b"N");
        }
        self.op(b"tQ").int(t.offset).ints(&t.size).ints(&t.stride).op(b"\x89");
        self.global("collections", "OrderedDict").op(b")RtR")
    }
}

fn elem_size(class: &str) -> usize {
    match class {
        "DoubleStorage" | "LongStorage" => 8,
        "FloatStorage" | "IntStorage" => 4,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        _ => 1,
    }
}

fn state_dict(ts: &[GenTensor], legacy: bool) -> Vec<u8> {
    let mut p = Pickle::new();
    p.global("collections", "OrderedDict").op(b")R");
    for (i, t) in ts.iter().enumerate() {
        p.tensor_item(&format!("t{i}"), t, legacy).op(b"s");
    }
    p.op(b".");
    p.0
}

/// A zip file of stored entries, with correct CRCs.
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let e: Vec<(&str, &[u8], bool)> = entries.iter().map(|&(n, d)| (n, d, false)).collect();
    zip_deflated(&e)
}

/// A zip file of entries, each stored or deflated (the bool), with correct CRCs.
fn zip_deflated(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
    let (mut body, mut central) = (vec![], vec![]);
    for &(name, data, deflate) in entries {
        let crc = crc32fast::hash(data);
        let off = body.len() as u32;
        let n = name.len() as u16;
        let len = data.len() as u32;
        let (method, payload) = if deflate {
            use std::io::Write;
            let mut e = flate2::write::DeflateEncoder::new(vec![], flate2::Compression::best());
            e.write_all(data).unwrap();
            (8u16, e.finish().unwrap())
        } else {
            (0, data.to_vec())
        };
        let clen = payload.len() as u32;
        body.extend_from_slice(&0x04034b50u32.to_le_bytes());
        for h in [20u16, 0, method, 0, 0x21] {
            body.extend_from_slice(&h.to_le_bytes());
        }
        for w in [crc, clen, len] {
            body.extend_from_slice(&w.to_le_bytes());
        }
        body.extend_from_slice(&n.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(&payload);
        central.extend_from_slice(&0x02014b50u32.to_le_bytes());
        for h in [20u16, 20, 0, method, 0, 0x21] {
            central.extend_from_slice(&h.to_le_bytes());
        }
        for w in [crc, clen, len] {
            central.extend_from_slice(&w.to_le_bytes());
        }
        for h in [n, 0, 0, 0, 0] {
            central.extend_from_slice(&h.to_le_bytes());
        }
        central.extend_from_slice(&0u32.to_le_bytes());
        central.extend_from_slice(&off.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let k = entries.len() as u16;
    let mut end = 0x06054b50u32.to_le_bytes().to_vec();
    for h in [0u16, 0, k, k] {
        end.extend_from_slice(&h.to_le_bytes());
    }
    end.extend_from_slice(&(central.len() as u32).to_le_bytes());
    end.extend_from_slice(&(body.len() as u32).to_le_bytes());
    end.extend_from_slice(&0u16.to_le_bytes());
    [body, central, end].concat()
}

const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e";

/// A legacy file: magic, 1001, system info, the state dict, the keys, then each storage as (count, bytes).
fn legacy_of(state_dict: &[u8], storages: &[(u8, u64, Vec<u8>)]) -> Vec<u8> {
    let mut b = LEGACY_MAGIC.to_vec();
    b.extend_from_slice(b"\x80\x02M\xe9\x03.");
    b.extend_from_slice(b"\x80\x02}.");
    b.extend_from_slice(state_dict);
    let mut keys = Pickle::new();
    keys.op(b"](");
    for (k, _, _) in storages {
        keys.str(&k.to_string());
    }
    keys.op(b"e.");
    b.extend_from_slice(&keys.0);
    for (_, count, data) in storages {
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(data);
    }
    b
}

// ---------------------------------------------------------------------------------------------------------------
// Strategies

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Remove(usize, usize),
    Insert(usize, Vec<u8>),
    Put64(usize, u64),
    Put32(usize, u32),
}

fn apply(mut b: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let n = b.len().max(1);
        match m {
            Mutation::Flip(i, x) => {
                if let Some(c) = b.get_mut(i % n) {
                    *c ^= x;
                }
            }
            Mutation::Truncate(i) => b.truncate(i % n),
            Mutation::Remove(i, k) => {
                let i = i % n;
                let k = (*k).min(b.len().saturating_sub(i));
                b.drain(i..i + k);
            }
            Mutation::Insert(i, v) => {
                let i = (i % n).min(b.len());
                b.splice(i..i, v.iter().copied());
            }
            Mutation::Put64(i, v) => {
                let i = i % n;
                for (j, x) in v.to_le_bytes().into_iter().enumerate() {
                    if let Some(c) = b.get_mut(i + j) {
                        *c = x;
                    }
                }
            }
            Mutation::Put32(i, v) => {
                let i = i % n;
                for (j, x) in v.to_le_bytes().into_iter().enumerate() {
                    if let Some(c) = b.get_mut(i + j) {
                        *c = x;
                    }
                }
            }
        }
    }
    b
}

/// Numbers that break arithmetic.
fn huge() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(1 << 63),
        Just((1 << 63) - 1),
        Just(1 << 62),
        Just(u32::MAX as u64),
        Just(1 << 32),
        (0u32..64).prop_map(|e| 1u64 << e),
        any::<u64>(),
    ]
}

/// Pickle fragments that a hostile file may hold.
fn pickle_snippet() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        huge().prop_map(|v| [&b"\x8a\x08"[..], &v.to_le_bytes()].concat()),
        (9u8..=255).prop_map(|n| [vec![0x8a, n], vec![0xff; n as usize]].concat()),
        any::<u32>().prop_map(|v| [&b"J"[..], &v.to_le_bytes()].concat()),
        huge().prop_map(|v| [&b"X"[..], &(v as u32).to_le_bytes(), b"abc"].concat()),
        Just(b"(".to_vec()),
        Just(b"t".to_vec()),
        Just(b"h\x00h\x00\x86q\x00".to_vec()),
        Just(b"q\x00".to_vec()),
        Just(b"\x85".to_vec()),
        Just(b"0".to_vec()),
        Just(b"\x95".to_vec()),
    ]
}

fn mutation(snippets: bool) -> impl Strategy<Value = Mutation> {
    let insert = if snippets {
        prop_oneof![pickle_snippet(), prop::collection::vec(any::<u8>(), 1..16)].boxed()
    } else {
        prop::collection::vec(any::<u8>(), 1..16).boxed()
    };
    prop_oneof![
        4 => (any::<usize>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), 1usize..64).prop_map(|(i, k)| Mutation::Remove(i, k)),
        2 => (any::<usize>(), insert).prop_map(|(i, v)| Mutation::Insert(i, v)),
        2 => (any::<usize>(), huge()).prop_map(|(i, v)| Mutation::Put64(i, v)),
        1 => (any::<usize>(), huge()).prop_map(|(i, v)| Mutation::Put32(i, v as u32)),
    ]
}

fn mutations(snippets: bool) -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(snippets), 1..6)
}

/// A dimension, a stride, an offset or an element count: mostly small, sometimes absurd (and then mostly below
/// 2^63, so that the parse goes past the signs).
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => 0u64..8,
        2 => 0u64..100_000,
        2 => (0u32..63).prop_map(|e| 1u64 << e),
        1 => Just(i64::MAX as u64),
        1 => huge(),
    ]
}

fn gen_tensor() -> impl Strategy<Value = GenTensor> {
    let class = prop_oneof![
        8 => prop::sample::select(vec![
            "FloatStorage",
            "DoubleStorage",
            "HalfStorage",
            "BFloat16Storage",
            "LongStorage",
            "IntStorage",
            "ShortStorage",
            "CharStorage",
            "ByteStorage",
            "BoolStorage",
        ]),
        1 => Just("ComplexFloatStorage"),
    ];
    (class, 0u8..3, number(), number(), prop::collection::vec((number(), number()), 0..4)).prop_map(
        |(class, key, numel, offset, dims)| GenTensor {
            class,
            key,
            numel,
            offset,
            size: dims.iter().map(|d| d.0).collect(),
            stride: dims.iter().map(|d| d.1).collect(),
        },
    )
}

/// Tensors; usually those sharing a storage agree on its type and size (as torch writes them).
fn gen_tensors() -> impl Strategy<Value = Vec<GenTensor>> {
    (prop::collection::vec(gen_tensor(), 1..5), prop::bool::weighted(0.8)).prop_map(|(mut ts, agree)| {
        if agree {
            for i in 0..ts.len() {
                if let Some(first) = ts[..i].iter().find(|t| t.key == ts[i].key).cloned() {
                    ts[i].class = first.class;
                    ts[i].numel = first.numel;
                }
            }
        }
        ts
    })
}

/// Bytes for storage `key` of the tensors: usually what their first one announces (when small), sometimes less
/// or more.
fn storage_bytes(ts: &[GenTensor], key: u8, cut: u16) -> (u64, Vec<u8>) {
    let Some(t) = ts.iter().find(|t| t.key == key) else {
        return (0, vec![]);
    };
    let want = (t.numel as usize).saturating_mul(elem_size(t.class));
    let len = if want <= 1 << 16 && !cut.is_multiple_of(4) { want } else { cut as usize % 4096 };
    (t.numel, (0..len).map(|i| (i * 7) as u8).collect())
}

/// A random pickle program over the opcodes candle knows, with hostile operands, inside a dict.
fn random_pickle() -> impl Strategy<Value = Vec<u8>> {
    let sel = |v: Vec<&'static [u8]>| prop::sample::select(v).prop_map(|b| b.to_vec());
    let op = prop_oneof![
        6 => sel(vec![b"(", b")", b"]", b"}", b"d", b"N", b"\x88", b"\x89"]),
        2 => any::<u8>().prop_map(|i| vec![b'K', i]),
        2 => sel(vec![
            b"ctorch._utils\n_rebuild_tensor_v2\n",
            b"ccollections\nOrderedDict\n",
            b"ctorch\nFloatStorage\n",
            b"X\x07\x00\x00\x00storage",
            b"X\x01\x00\x00\x000",
            b"X\x03\x00\x00\x00cpu",
        ]),
        3 => sel(vec![b"t", b"\x85", b"\x86", b"\x87"]),
        2 => sel(vec![b"a", b"e", b"s", b"u"]),
        2 => sel(vec![b"R", b"b", b"\x81", b"Q"]),
        2 => (0u8..4).prop_map(|i| vec![b'h', i]),
        2 => (0u8..4).prop_map(|i| vec![b'q', i]),
        1 => (0u32..4).prop_map(|i| [&b"j"[..], &i.to_le_bytes()].concat()),
        1 => (0u32..4).prop_map(|i| [&b"r"[..], &i.to_le_bytes()].concat()),
        1 => pickle_snippet(),
    ];
    prop::collection::vec(op, 0..100).prop_map(|ops| [&b"\x80\x02}q\x00"[..], &ops.concat(), b"."].concat())
}

fn check_parse(name: &str, bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
    let (r, peak) = measured(|| Checkpoint::from_bytes(name, bytes));
    if let Err(e) = &r {
        prop_assert!(e.to_string().starts_with(name), "the error does not name the file: {e}");
    }
    prop_assert!(peak <= allowed(bytes.len()), "peak {peak} bytes for {} bytes of input", bytes.len());
    Ok(())
}

/// `cases` cases from a fixed seed, so that `cargo test` is repeatable; PROPTEST_CASES and PROPTEST_RNG_SEED
/// (e.g. PROPTEST_RNG_SEED=$RANDOM PROPTEST_CASES=100000) fuzz further.
fn config(cases: u32) -> ProptestConfig {
    let d = ProptestConfig::default(); // reads the PROPTEST_* variables
    let env = |v: &str| std::env::var_os(v).is_some();
    ProptestConfig {
        cases: if env("PROPTEST_CASES") { d.cases } else { cases },
        rng_seed: if env("PROPTEST_RNG_SEED") {
            d.rng_seed
        } else {
            proptest::test_runner::RngSeed::Fixed(0x6772_6164)
        },
        failure_persistence: None,
        ..d
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn zip_pth_mutated_never_panics(ms in mutations(false)) {
        let _g = lock();
        let b = apply(std::fs::read(fixture("ckpt_zip.pth")).unwrap(), &ms);
        check_parse("fuzz.pth", &b)?;
    }

    #[test]
    fn zip_pth_with_mutated_pickle_never_panics(ms in mutations(true), cut in any::<u16>()) {
        // the fixture's own data.pkl, mutated, in a zip with correct CRCs (so the mutation reaches the pickle)
        let _g = lock();
        let z = std::fs::read(fixture("ckpt_zip.pth")).unwrap();
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&z[..])).unwrap();
        let mut read = |n: &str| {
            let mut v = vec![];
            std::io::Read::read_to_end(&mut zip.by_name(n).unwrap(), &mut v).unwrap();
            v
        };
        let pkl = apply(read("archive/data.pkl"), &ms);
        let s0 = read("archive/data/0");
        let s1 = read("archive/data/1");
        let s1 = &s1[..s1.len().min(cut as usize)];
        let b = zip_of(&[("archive/data.pkl", &pkl), ("archive/data/0", &s0), ("archive/data/1", s1)]);
        check_parse("fuzz.pth", &b)?;
    }

    #[test]
    fn zip_pth_generated_views_never_panic(ts in gen_tensors(), cut in any::<u16>()) {
        let _g = lock();
        let pkl = state_dict(&ts, false);
        let storages: Vec<(String, Vec<u8>)> =
            (0..3).map(|k| (format!("archive/data/{k}"), storage_bytes(&ts, k, cut).1)).collect();
        let mut entries: Vec<(&str, &[u8])> = vec![("archive/data.pkl", &pkl)];
        entries.extend(storages.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
        let b = zip_of(&entries);
        check_parse("fuzz.pth", &b)?;
    }

    #[test]
    fn pickle_vm_on_random_programs_never_panics(pkl in random_pickle()) {
        let _g = lock();
        let b = zip_of(&[("archive/data.pkl", &pkl), ("archive/data/0", &[0u8; 16])]);
        check_parse("fuzz.pth", &b)?;
    }

    #[test]
    fn legacy_pth_mutated_never_panics(ms in mutations(true)) {
        let _g = lock();
        let b = apply(std::fs::read(fixture("ckpt_legacy.pth")).unwrap(), &ms);
        check_parse("fuzz.pth", &b)?;
    }

    #[test]
    fn legacy_pth_generated_views_never_panic(
        ts in gen_tensors(),
        cut in any::<u16>(),
        lie in prop::option::of(huge()),
    ) {
        let _g = lock();
        let pkl = state_dict(&ts, true);
        let mut storages: Vec<(u8, u64, Vec<u8>)> = (0..3u8)
            .filter(|k| ts.iter().any(|t| t.key == *k))
            .map(|k| {
                let (n, d) = storage_bytes(&ts, k, cut);
                (k, n, d)
            })
            .collect();
        if let (Some(v), Some(s)) = (lie, storages.first_mut()) {
            s.1 = v;
        }
        let b = legacy_of(&pkl, &storages);
        check_parse("fuzz.pth", &b)?;
    }

    #[test]
    fn safetensors_mutated_never_panics(ms in mutations(false)) {
        let _g = lock();
        let b = apply(std::fs::read(fixture("ckpt.safetensors")).unwrap(), &ms);
        check_parse("fuzz.safetensors", &b)?;
    }

    #[test]
    fn safetensors_generated_headers_never_panic(
        entries in prop::collection::vec((
            prop::sample::select(vec![
                ("F32", 32), ("F16", 16), ("BF16", 16), ("F64", 64), ("I64", 64), ("I32", 32), ("I16", 16),
                ("I8", 8), ("U8", 8), ("BOOL", 8), ("U16", 16), ("U32", 32), ("U64", 64), ("F8_E4M3", 8),
                ("F8_E5M2", 8), ("F4", 4), ("F6_E2M3", 6), ("F6_E3M2", 6), ("F8_E8M0", 8), ("C64", 64), ("XX", 8),
            ]),
            prop::collection::vec(number(), 0..4),
            prop::option::weighted(0.2, (number(), number())),
        ), 0..4),
        extra in prop_oneof![4 => Just(0usize), 1 => 0usize..64],
        lie in prop::option::weighted(0.1, huge()),
    ) {
        // offsets follow each other (as written) unless given; the data is as long as they say, or a bit longer
        let _g = lock();
        let mut header = serde_json::Map::new();
        let mut at = 0u64;
        for (i, ((dtype, bits), shape, offsets)) in entries.iter().enumerate() {
            let nbytes = shape.iter().fold(*bits as u64, |a, &d| a.wrapping_mul(d)) / 8;
            let (s, e) = offsets.unwrap_or((at, at.wrapping_add(nbytes)));
            at = e;
            header.insert(format!("t{i}"), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [s, e]}));
        }
        let h = serde_json::to_vec(&header).unwrap();
        let n = lie.unwrap_or(h.len() as u64);
        let data_len = (at as usize).min(1 << 16) + extra;
        let b = [&n.to_le_bytes()[..], &h, &vec![0u8; data_len]].concat();
        check_parse("fuzz.safetensors", &b)?;
    }

    #[test]
    fn npy_mutated_never_panics(ms in mutations(false)) {
        let _g = lock();
        let b = apply(std::fs::read(fixture("expected.conv.weight.npy")).unwrap(), &ms);
        let (_, peak) = measured(|| Array::parse(&b));
        prop_assert!(peak <= allowed(b.len()), "peak {peak} for {} bytes", b.len());
    }

    #[test]
    fn npy_generated_headers_never_panic(
        version in 0u8..5,
        descr in prop::sample::select(vec!["'<f4'", "'<f8'", "'|u1'", "'>f4'", "<f4", "'<f4", ""]),
        fortran in any::<bool>(),
        dims in prop::collection::vec(number(), 0..5),
        shape_form in 0u8..6,
        hlen_lie in prop::option::of(any::<u32>()),
        body_len in 0usize..1024,
        utf8_junk in any::<bool>(),
    ) {
        let _g = lock();
        let list = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        let shape = match shape_form {
            0 => format!("({list},)"),
            1 => format!("({list})"),
            2 => format!("{list})"),
            3 => format!("({list}"),
            4 => ")".to_string(),
            _ => format!("(-{list})"),
        };
        let fo = if fortran { "True" } else { "False" };
        let mut h = format!("{{'descr': {descr}, 'fortran_order': {fo}, 'shape': {shape}, }}").into_bytes();
        if utf8_junk {
            h.insert(h.len() / 2, 0xc3);
        }
        let len = hlen_lie.unwrap_or(h.len() as u32);
        let mut b = b"\x93NUMPY".to_vec();
        b.push(version);
        b.push(0);
        if version == 1 {
            b.extend_from_slice(&(len as u16).to_le_bytes());
        } else {
            b.extend_from_slice(&len.to_le_bytes());
        }
        b.extend_from_slice(&h);
        b.extend(std::iter::repeat_n(0x3fu8, body_len));
        let (_, peak) = measured(|| Array::parse(&b));
        prop_assert!(peak <= allowed(b.len()), "peak {peak} for {} bytes", b.len());
    }

    #[test]
    fn random_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..2048), head in 0u8..5) {
        // random bytes behind each format's magic, so that each parser sees them
        let _g = lock();
        let prefix: &[u8] = match head {
            0 => b"PK\x03\x04",
            1 => LEGACY_MAGIC,
            2 => b"\x40\x00\x00\x00\x00\x00\x00\x00{",
            3 => b"\x93NUMPY\x01\x00",
            _ => b"",
        };
        let b = [prefix, &b].concat();
        check_parse("fuzz.bin", &b)?;
        let (_, peak) = measured(|| Array::parse(&b));
        prop_assert!(peak <= allowed(b.len()), "peak {peak} for {} bytes", b.len());
    }
}
