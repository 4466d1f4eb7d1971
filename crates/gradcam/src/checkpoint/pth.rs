//! PyTorch pickled checkpoints, zip and legacy. The pickle stream is parsed with candle's pickle VM
//! (`candle_core::pickle::Stack`); what it describes (storages, offsets, sizes, strides) is resolved here,
//! including non-contiguous views that candle's own reader rejects.

use super::scan;
use candle_core::pickle::{Object, Stack};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::io::{Cursor, Read, Seek, SeekFrom};

type R<T> = std::result::Result<T, String>;

/// A legacy file starts with the pickled magic number 0x1950a86a20f9469cfc6c (protocol 2, LONG1 of 10 bytes).
pub(crate) const LEGACY_MAGIC: [u8; 15] =
    [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];

/// How a storage holds its elements. Every one is converted to f32; the dtype each tensor was stored as is kept
/// (`Checkpoint::dtypes`) so that weights stored as integers are refused where a model asks for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Elem {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

/// What an unsupported dtype is refused with, after "tensor `x` is stored as <dtype>".
pub(crate) const UNSUPPORTED: &str = "which gradcam does not read; expected float32, float16, bfloat16 or float64";

impl Elem {
    /// The element type of a torch storage class; Err(the dtype's name) for one gradcam does not read.
    fn from_storage(class: &str) -> std::result::Result<Elem, String> {
        Ok(match class {
            "FloatStorage" => Elem::F32,
            "DoubleStorage" => Elem::F64,
            "HalfStorage" => Elem::F16,
            "BFloat16Storage" => Elem::BF16,
            "LongStorage" => Elem::I64,
            "IntStorage" => Elem::I32,
            "ShortStorage" => Elem::I16,
            "CharStorage" => Elem::I8,
            "ByteStorage" => Elem::U8,
            "BoolStorage" => Elem::Bool,
            other => {
                // torch's names: Float8_e4m3fnStorage holds torch.float8_e4m3fn, ComplexFloatStorage complex64
                let base = other.strip_suffix("Storage").unwrap_or(other);
                let name = match base {
                    "ComplexFloat" => "complex64".to_string(),
                    "ComplexDouble" => "complex128".to_string(),
                    "ComplexHalf" => "complex32".to_string(),
                    "" | "Untyped" => format!("{other} (untyped bytes)"),
                    b => b.to_lowercase(),
                };
                return Err(clip(&name));
            }
        })
    }

    /// The element type of a safetensors dtype; Err(its name) for one gradcam does not read.
    pub(crate) fn from_safetensors(d: safetensors::Dtype) -> std::result::Result<Elem, String> {
        use safetensors::Dtype as D;
        Ok(match d {
            D::F32 => Elem::F32,
            D::F64 => Elem::F64,
            D::F16 => Elem::F16,
            D::BF16 => Elem::BF16,
            D::I64 => Elem::I64,
            D::I32 => Elem::I32,
            D::I16 => Elem::I16,
            D::I8 => Elem::I8,
            D::U8 => Elem::U8,
            D::U16 => Elem::U16,
            D::U32 => Elem::U32,
            D::U64 => Elem::U64,
            D::BOOL => Elem::Bool,
            D::F8_E4M3 => return Err("float8_e4m3fn (F8_E4M3)".into()),
            D::F8_E5M2 => return Err("float8_e5m2 (F8_E5M2)".into()),
            other => return Err(format!("{other:?}")),
        })
    }

    /// torch's name of the dtype.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Elem::F32 => "float32",
            Elem::F64 => "float64",
            Elem::F16 => "float16",
            Elem::BF16 => "bfloat16",
            Elem::I64 => "int64",
            Elem::I32 => "int32",
            Elem::I16 => "int16",
            Elem::I8 => "int8",
            Elem::U8 => "uint8",
            Elem::U16 => "uint16",
            Elem::U32 => "uint32",
            Elem::U64 => "uint64",
            Elem::Bool => "bool",
        }
    }

    pub(crate) fn size(self) -> usize {
        match self {
            Elem::F64 | Elem::I64 | Elem::U64 => 8,
            Elem::F32 | Elem::I32 | Elem::U32 => 4,
            Elem::F16 | Elem::BF16 | Elem::I16 | Elem::U16 => 2,
            Elem::I8 | Elem::U8 | Elem::Bool => 1,
        }
    }

    pub(crate) fn read(self, b: &[u8]) -> f32 {
        let b8 = || b[..8].try_into().unwrap_or([0; 8]);
        match self {
            Elem::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Elem::F64 => f64::from_le_bytes(b8()) as f32,
            Elem::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            Elem::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            Elem::I64 => i64::from_le_bytes(b8()) as f32,
            Elem::U64 => u64::from_le_bytes(b8()) as f32,
            Elem::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            Elem::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            Elem::I16 => i16::from_le_bytes([b[0], b[1]]) as f32,
            Elem::U16 => u16::from_le_bytes([b[0], b[1]]) as f32,
            Elem::I8 => b[0] as i8 as f32,
            Elem::U8 | Elem::Bool => b[0] as f32,
        }
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

/// A tensor as the pickle describes it: a view into a storage.
#[derive(Debug)]
struct View {
    name: String,
    storage: StorageId,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// A storage as the pickle's persistent id describes it: its key (`data/<key>` in a zip file), element type and
/// element count.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StorageId {
    key: String,
    elem: Elem,
    numel: usize,
}

/// What an object is, in a few words (never the whole object: a hostile one may be large or deep).
fn describe(o: &Object) -> String {
    match o {
        Object::Int(i) => format!("the integer {i}"),
        Object::Long(i) => format!("the integer {i}"),
        Object::Float(f) => format!("the float {f}"),
        Object::Unicode(s) => format!("the string {:?}", clip(s)),
        Object::Bool(b) => format!("the boolean {b}"),
        Object::None => "None".to_string(),
        Object::Tuple(v) => format!("a tuple of {} items", v.len()),
        Object::List(v) => format!("a list of {} items", v.len()),
        Object::Dict(v) => format!("a dict of {} items", v.len()),
        Object::Mark => "a pickle MARK".to_string(),
        Object::Class { module_name, class_name } => format!("the class {}.{}", clip(module_name), clip(class_name)),
        Object::Reduce { callable, .. } | Object::Build { callable, .. } => match callable.as_ref() {
            Object::Class { module_name, class_name } => {
                format!("an object made by {}.{}", clip(module_name), clip(class_name))
            }
            _ => "an object".to_string(),
        },
        Object::PersistentLoad(_) => "a persistent reference".to_string(),
    }
}

fn int(o: &Object) -> R<i64> {
    match o {
        Object::Int(i) => Ok(*i as i64),
        Object::Long(i) => Ok(*i),
        other => Err(format!("expected an integer, found {}", describe(other))),
    }
}

fn nonneg(o: &Object) -> R<usize> {
    let i = int(o)?;
    usize::try_from(i).map_err(|_| format!("{i} (expected a count or an index, 0 or more)"))
}

fn usizes(o: &Object) -> R<Vec<usize>> {
    match o {
        Object::Tuple(v) | Object::List(v) => v.iter().map(nonneg).collect(),
        other => Err(format!("expected a tuple of integers, found {}", describe(other))),
    }
}

fn is_class(o: &Object, module: &str, class: &str) -> bool {
    matches!(o, Object::Class { module_name, class_name } if module_name == module && class_name == class)
}

/// The storage a persistent id `('storage', <class>, key, location, numel[, view])` describes; `who` (such as
/// "tensor `x`") starts every message.
fn storage_id(pid: &Object, who: &str) -> R<StorageId> {
    let Object::Tuple(pid) = pid else {
        return Err(format!("{who}: its storage id is {}, expected a tuple", describe(pid)));
    };
    if pid.len() < 5 {
        return Err(format!("{who}: its storage id has {} fields, expected 5 or more", pid.len()));
    }
    if !matches!(&pid[0], Object::Unicode(s) if s == "storage") {
        return Err(format!("{who}: its persistent id starts with {}, expected \"storage\"", describe(&pid[0])));
    }
    let elem = match &pid[1] {
        Object::Class { class_name, .. } => {
            Elem::from_storage(class_name).map_err(|dtype| format!("{who} is stored as {dtype}, {UNSUPPORTED}"))?
        }
        other => {
            return Err(format!("{who}: storage type {}, expected a class such as torch.FloatStorage", describe(other)))
        }
    };
    let key = match &pid[2] {
        Object::Unicode(s) => s.clone(),
        other => return Err(format!("{who}: storage key {}, expected a string", describe(other))),
    };
    let numel = nonneg(&pid[4]).map_err(|e| format!("{who}: storage {key}: element count {e}"))?;
    if pid.len() > 5 && pid[5] != Object::None {
        return Err(format!(
            "{who}: storage {key} is a view of another storage (the format of torch before 0.4): not supported"
        ));
    }
    Ok(StorageId { key, elem, numel })
}

/// If `o` is a pickled tensor, its view.
fn as_view(name: &str, o: &Object) -> R<Option<View>> {
    let Object::Reduce { callable, args } = o else {
        return Ok(None);
    };
    let (callable, args) = if is_class(callable, "torch._utils", "_rebuild_parameter")
        || is_class(callable, "torch._utils", "_rebuild_parameter_with_state")
    {
        match args.as_ref() {
            Object::Tuple(a) if !a.is_empty() => match &a[0] {
                Object::Reduce { callable, args } => (callable, args),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        }
    } else {
        (callable, args)
    };
    if !is_class(callable, "torch._utils", "_rebuild_tensor_v2")
        && !is_class(callable, "torch._utils", "_rebuild_tensor")
    {
        return match callable.as_ref() {
            // torch writes tensors of the dtypes added since 2.1 (float8_*, uint16 ...) with _rebuild_tensor_v3,
            // their dtype 7th
            Object::Class { module_name, class_name }
                if module_name == "torch._utils" && class_name == "_rebuild_tensor_v3" =>
            {
                let dtype = match args.as_ref() {
                    Object::Tuple(a) => match a.get(6) {
                        Some(Object::Class { class_name, .. }) => clip(class_name),
                        Some(other) => describe(other),
                        None => "an unknown dtype".to_string(),
                    },
                    _ => "an unknown dtype".to_string(),
                };
                Err(format!("tensor `{name}` is stored as {dtype}, {UNSUPPORTED}"))
            }
            // quantized, sparse, nested, meta tensors ...: never dropped silently
            Object::Class { module_name, class_name }
                if module_name == "torch._utils" && class_name.starts_with("_rebuild_") =>
            {
                Err(format!(
                    "tensor `{name}` is made by torch._utils.{} (a quantized, sparse or other special tensor), which \
                     gradcam does not read; expected a dense float32, float16, bfloat16 or float64 tensor",
                    clip(class_name)
                ))
            }
            _ => Ok(None),
        };
    }
    let Object::Tuple(a) = args.as_ref() else {
        return Err(format!("tensor `{name}`: its arguments are {}, expected a tuple", describe(args)));
    };
    if a.len() < 4 {
        return Err(format!("tensor `{name}`: {} arguments, expected at least 4", a.len()));
    }
    let Object::PersistentLoad(pid) = &a[0] else {
        return Err(format!("tensor `{name}`: its storage is {}, expected a persistent reference", describe(&a[0])));
    };
    let storage = storage_id(pid, &format!("tensor `{name}`"))?;
    let offset = nonneg(&a[1]).map_err(|e| format!("tensor `{name}`: offset {e}"))?;
    let size = usizes(&a[2]).map_err(|e| format!("tensor `{name}`: size: {e}"))?;
    let stride = usizes(&a[3]).map_err(|e| format!("tensor `{name}`: stride: {e}"))?;
    if size.len() != stride.len() {
        return Err(format!("tensor `{name}`: {} sizes but {} strides, expected as many", size.len(), stride.len()));
    }
    Ok(Some(View { name: name.to_string(), storage, offset, size, stride }))
}

/// The tensors of a (possibly nested) state dict; None when `obj` is not a dict.
fn collect_views(obj: &Object) -> R<Option<Vec<View>>> {
    let Object::Dict(items) = obj else {
        return Ok(None);
    };
    let mut views = vec![];
    for (k, v) in items {
        let Object::Unicode(k) = k else { continue };
        if let Some(view) = as_view(k, v)? {
            views.push(view);
        }
    }
    if views.is_empty() {
        // A training checkpoint: {"state_dict": {...}} or {"model": {...}}.
        for key in ["state_dict", "model_state_dict", "model", "net"] {
            if let Some((_, v)) = items.iter().find(|(k, _)| matches!(k, Object::Unicode(s) if s == key)) {
                if let Some(v) = collect_views(v)? {
                    if !v.is_empty() {
                        return Ok(Some(v));
                    }
                }
            }
        }
    }
    Ok(Some(views))
}

fn state_dict_views(obj: &Object) -> R<Vec<View>> {
    collect_views(obj)?.ok_or_else(|| {
        format!(
            "the checkpoint is {}, expected a dictionary of tensors (a whole pickled model is not supported: save its state_dict)",
            describe(obj)
        )
    })
}

/// Every storage the object refers to, by key (a legacy file holds them all, the state dict's and others').
fn all_storages(obj: &Object) -> R<HashMap<String, StorageId>> {
    let mut out: HashMap<String, StorageId> = HashMap::new();
    let mut todo = vec![obj];
    while let Some(o) = todo.pop() {
        match o {
            Object::PersistentLoad(pid) => {
                let id = storage_id(pid, "a storage")?;
                if let Some(old) = out.get(&id.key) {
                    if *old != id {
                        return Err(format!(
                            "storage {} is described twice, as {} {:?} elements and as {} {:?} elements",
                            id.key, old.numel, old.elem, id.numel, id.elem
                        ));
                    }
                } else {
                    out.insert(id.key.clone(), id);
                }
            }
            Object::Tuple(v) | Object::List(v) => todo.extend(v),
            Object::Dict(v) => todo.extend(v.iter().flat_map(|(k, v)| [k, v])),
            Object::Reduce { callable, args } | Object::Build { callable, args } => {
                todo.push(callable);
                todo.push(args);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Check that `v` lies within its storage of `have` elements; its element count.
fn check_view(v: &View, have: usize) -> R<usize> {
    let what = || {
        format!(
            "tensor `{}` (offset {}, size {:?}, stride {:?}) over storage {} of {have} elements",
            v.name, v.offset, v.size, v.stride, v.storage.key
        )
    };
    // The product of the non-zero sizes must fit too: candle multiplies them in any order (shape and strides).
    v.size
        .iter()
        .filter(|&&s| s != 0)
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or_else(|| format!("{}: its element count overflows", what()))?;
    let numel = v.size.iter().product::<usize>();
    if numel > have {
        return Err(format!(
            "{}: {numel} elements, more than its storage holds (expected at most {have}; a broadcast view, \
             stride 0, is not a checkpoint's tensor)",
            what()
        ));
    }
    if numel == 0 {
        if v.offset > have {
            return Err(format!("{}: the offset is past the end of the storage", what()));
        }
        return Ok(0);
    }
    let mut last = v.offset;
    for (&s, &st) in v.size.iter().zip(&v.stride) {
        last = (s - 1)
            .checked_mul(st)
            .and_then(|x| last.checked_add(x))
            .ok_or_else(|| format!("{}: its extent overflows (stride too large)", what()))?;
    }
    if last >= have {
        return Err(format!(
            "{}: it reaches element {last}, past the end of its storage (expected below {have}; file truncated?)",
            what()
        ));
    }
    Ok(numel)
}

/// Materialise a contiguous f32 tensor from a strided view of a storage.
fn materialise(v: &View, storage: &[u8]) -> R<Tensor> {
    let es = v.storage.elem.size();
    let numel = check_view(v, storage.len() / es)?;
    // numel <= storage.len() / es: the allocation is bounded by the bytes the file holds.
    let mut out = Vec::with_capacity(numel);
    let elems = |from: usize, n: usize| storage[from * es..(from + n) * es].chunks_exact(es);
    let nd = v.size.len();
    // Walk the last dimension in runs (contiguous when its stride is 1), the others with an odometer.
    let (inner, inner_stride) = match nd {
        0 => (1, 1),
        _ => (v.size[nd - 1], v.stride[nd - 1]),
    };
    if numel > 0 {
        let outer = numel / inner;
        let mut idx = vec![0usize; nd.saturating_sub(1)];
        for _ in 0..outer {
            // within the extent checked above: no overflow
            let base = v.offset + idx.iter().zip(&v.stride).map(|(i, s)| i * s).sum::<usize>();
            if inner_stride == 1 {
                out.extend(elems(base, inner).map(|b| v.storage.elem.read(b)));
            } else {
                out.extend((0..inner).map(|j| v.storage.elem.read(&storage[(base + j * inner_stride) * es..][..es])));
            }
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < v.size[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    Tensor::from_vec(out, v.size.clone(), &Device::Cpu)
        .map_err(|e| format!("tensor `{}`: {}", v.name, super::candle_message(&e)))
}

/// The tensors of `views`, from their storages' bytes. Identical views share one tensor; views may together hold
/// at most `OVERLAP` times the elements of the storages they view (plus a little), so that many views of one
/// storage cannot multiply a small file into a huge allocation.
fn materialise_all(views: Vec<View>, storages: &HashMap<String, &[u8]>) -> R<super::Loaded> {
    const OVERLAP: usize = 4;
    let mut budget = storages.values().fold(1usize << 20, |a, s| a.saturating_add(s.len().saturating_mul(OVERLAP)));
    // a view, by storage key, offset, size and stride
    type Key<'v> = (&'v str, usize, &'v [usize], &'v [usize]);
    let mut seen: HashMap<Key, Tensor> = HashMap::new();
    let mut out = HashMap::new();
    for v in &views {
        let key = (v.storage.key.as_str(), v.offset, v.size.as_slice(), v.stride.as_slice());
        let t = match seen.get(&key) {
            Some(t) => t.clone(),
            None => {
                let s = storages
                    .get(&v.storage.key)
                    .ok_or_else(|| format!("tensor `{}`: its storage {} is not in the file", v.name, v.storage.key))?;
                let es = v.storage.elem.size();
                let numel = check_view(v, s.len() / es)?;
                budget = budget.checked_sub(numel.saturating_mul(es)).ok_or_else(|| {
                    format!(
                        "tensor `{}`: the tensors view more than {OVERLAP} times the bytes of their storages \
                         (overlapping views of one storage?); refused",
                        v.name
                    )
                })?;
                let t = materialise(v, s)?;
                seen.insert(key, t.clone());
                t
            }
        };
        out.insert(v.name.clone(), (t, v.storage.elem.name()));
    }
    Ok(out)
}

/// Run candle's pickle VM on the pickle at the start of `b`, once the dry run has found it safe: the object and
/// the pickle's length.
fn read_pickle(b: &[u8], what: &str) -> R<(Object, usize)> {
    let len = scan::check(b).map_err(|e| format!("the {what} pickle: {e}"))?;
    let mut stack = Stack::empty();
    let clip = |e: candle_core::Error| {
        let mut m = super::candle_message(&e);
        if m.len() > 300 {
            let mut cut = 300;
            while !m.is_char_boundary(cut) {
                cut -= 1;
            }
            m.truncate(cut);
            m.push('…');
        }
        format!("cannot parse the {what} pickle: {m}")
    };
    stack.read_loop(&mut Cursor::new(&b[..len])).map_err(clip)?;
    Ok((stack.finalize().map_err(clip)?, len))
}

/// A zip error's message, with the I/O error's own (the zip crate says only "i/o error").
fn zip_msg(e: &zip::result::ZipError) -> String {
    match e {
        zip::result::ZipError::Io(io) => format!("i/o error: {io}"),
        other => other.to_string(),
    }
}

/// The file as the zip crate reads it: an error once it has read 4 times the file's size (plus 1 MiB), however
/// it seeks. When an end-of-directory record leads nowhere the crate tries every earlier one, searching the file
/// again each time: time quadratic in the size of a file full of fake records (23 s for 4 MB). Real files are
/// read about once.
struct Bounded<'a> {
    inner: Cursor<&'a [u8]>,
    left: u64,
}

impl Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 && !buf.is_empty() {
            return Err(std::io::Error::other(
                "read 4 times the file's size without making sense of its zip directory (fake end records?); refused",
            ));
        }
        let n = (buf.len() as u64).min(self.left) as usize;
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

impl Seek for Bounded<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(to)
    }
}

/// Check the zip end records before the zip crate reads them: the end-of-central-directory record within the
/// last 64 KiB (where torch and every zip writer put it), and a central directory that fits the file and holds
/// its entries (46 bytes each at least; the crate reserves memory for as many as the record declares), starting
/// where the record says.
fn check_zip_end(b: &[u8]) -> R<()> {
    let u16_at = |s: &[u8], i: usize| s.get(i..i + 2).map_or(0, |x| u16::from_le_bytes([x[0], x[1]]) as u64);
    let u32_at =
        |s: &[u8], i: usize| s.get(i..i + 4).map_or(0, |x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]) as u64);
    let u64_at =
        |s: &[u8], i: usize| s.get(i..i + 8).and_then(|x| x.try_into().ok()).map_or(u64::MAX, u64::from_le_bytes);
    let last = b.len().saturating_sub(22);
    let pos = (last.saturating_sub(0xffff)..=last)
        .rev()
        .find(|&i| b[i..].starts_with(b"PK\x05\x06"))
        .ok_or("no end-of-central-directory record in its last 64 KiB: not a zip file, or truncated")?;
    let end = &b[pos..];
    let (mut entries, mut size, mut offset) = (u16_at(end, 10), u32_at(end, 12), u32_at(end, 16));
    if entries == 0xffff || size == 0xffff_ffff || offset == 0xffff_ffff {
        // zip64: a locator just before the record points at the zip64 end record, which has the real numbers
        let loc = pos.checked_sub(20).map(|l| &b[l..pos]).filter(|l| l.starts_with(b"PK\x06\x07"));
        if let Some(loc) = loc {
            let rec = usize::try_from(u64_at(loc, 8))
                .ok()
                .and_then(|at| b.get(at..))
                .filter(|r| r.len() >= 56 && r.starts_with(b"PK\x06\x06"))
                .ok_or("the zip64 end record is not where its locator says (truncated or crafted?)")?;
            (entries, size, offset) = (u64_at(rec, 32), u64_at(rec, 40), u64_at(rec, 48));
        }
    }
    if offset.checked_add(size).is_none_or(|e| e > pos as u64) || entries.saturating_mul(46) > size {
        return Err(format!(
            "the zip directory declares {entries} entries in {size} bytes at byte {offset}, before its end record at \
             byte {pos} (expected at least 46 bytes an entry, within the file)"
        ));
    }
    if entries > 0 && !b[offset as usize..].starts_with(b"PK\x01\x02") {
        return Err(format!("the zip directory is not at byte {offset}, where its end record says (crafted zip?)"));
    }
    Ok(())
}

/// The largest data.pkl read: real ones take a few hundred bytes per tensor.
const MAX_PICKLE: u64 = 64 << 20;

/// The most the compressed entries of a zip file of `len` bytes may inflate to, in all: 16 times its size plus
/// 16 MiB. torch writes storages uncompressed (a stored entry holds its bytes in the file); a deflated one is a
/// re-zipped file, whose zeros could otherwise inflate a few MB into GBs.
pub(crate) fn max_inflated(len: usize) -> u64 {
    16 * len as u64 + (16 << 20)
}

/// Count `n` more inflated bytes of the entry `name` against the bound of `max_inflated`.
fn inflate(total: &mut u64, n: u64, name: &str, len: usize) -> R<()> {
    let bound = max_inflated(len);
    *total = total.saturating_add(n);
    if *total > bound {
        return Err(format!(
            "{name} is compressed and inflates to {n} bytes ({} in all with the entries before it), more than the \
             {bound} bytes allowed for a compressed file of {len} bytes (16 times its size plus 16 MiB; torch \
             writes storages uncompressed)",
            *total
        ));
    }
    Ok(())
}

/// PyTorch's zip format: `<dir>/data.pkl` describes the tensors, `<dir>/data/<key>` holds each storage.
pub(crate) fn load_zip(bytes: &[u8]) -> R<super::Loaded> {
    let mut inflated = 0u64;
    check_zip_end(bytes)?;
    let reader = Bounded { inner: Cursor::new(bytes), left: 4 * bytes.len() as u64 + (1 << 20) };
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| format!("not a readable zip file: {}", zip_msg(&e)))?;
    let pkl = zip
        .file_names()
        .find(|n| n.ends_with("data.pkl"))
        .map(str::to_string)
        .ok_or("a zip file without data.pkl: not a PyTorch checkpoint")?;
    let dir = pkl.trim_end_matches("data.pkl").to_string();
    let data = {
        let mut f = zip.by_name(&pkl).map_err(|e| format!("cannot read {pkl}: {}", zip_msg(&e)))?;
        let declared = f.size();
        if declared > MAX_PICKLE {
            return Err(format!(
                "{pkl} declares {declared} bytes, expected at most {MAX_PICKLE} (a pickle of tensors is far smaller)"
            ));
        }
        if f.compression() != zip::CompressionMethod::Stored {
            inflate(&mut inflated, declared, &pkl, bytes.len())?;
        }
        let mut data = Vec::with_capacity((declared as usize).min(bytes.len()));
        (&mut f).take(declared + 1).read_to_end(&mut data).map_err(|e| format!("cannot read {pkl}: {e}"))?;
        if data.len() as u64 > declared {
            return Err(format!("{pkl} inflates to more than the {declared} bytes it declares"));
        }
        data
    };
    let (obj, _) = read_pickle(&data, "data.pkl")?;
    let views = state_dict_views(&obj)?;
    // Read each storage the views need, as many bytes as its persistent id says and no more.
    let mut owned: HashMap<String, Vec<u8>> = HashMap::new();
    let mut spans: Vec<(u64, u64, String)> = vec![];
    for v in &views {
        let id = &v.storage;
        if owned.contains_key(&id.key) {
            continue;
        }
        let name = format!("{dir}data/{}", id.key);
        let need = id.numel.checked_mul(id.elem.size()).ok_or_else(|| {
            format!("tensor `{}`: its storage {} announces {} elements, an impossible size", v.name, id.key, id.numel)
        })?;
        let mut f = zip
            .by_name(&name)
            .map_err(|e| format!("tensor `{}`: cannot read its storage {name}: {}", v.name, zip_msg(&e)))?;
        if f.size() < need as u64 {
            return Err(format!(
                "tensor `{}`: its storage {name} holds {} bytes, the checkpoint says {} elements of {} bytes ({need} bytes)",
                v.name,
                f.size(),
                id.numel,
                id.elem.size()
            ));
        }
        if f.compression() != zip::CompressionMethod::Stored {
            inflate(&mut inflated, need as u64, &name, bytes.len())?;
        }
        spans.push((f.data_start(), f.data_start().saturating_add(f.compressed_size()), name.clone()));
        // Stored entries hold their bytes in the file; deflated ones grow the buffer as they inflate.
        let mut buf = Vec::with_capacity(need.min(f.compressed_size().min(bytes.len() as u64) as usize));
        (&mut f).take(need as u64).read_to_end(&mut buf).map_err(|e| format!("cannot read {name}: {e}"))?;
        if buf.len() < need {
            return Err(format!(
                "tensor `{}`: its storage {name} ends after {} bytes, expected {need} (truncated?)",
                v.name,
                buf.len()
            ));
        }
        owned.insert(id.key.clone(), buf);
    }
    // Entries sharing bytes would let one small file hold many large storages.
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(format!("zip entries {} and {} overlap in the file (a crafted zip?)", w[0].2, w[1].2));
        }
    }
    let storages = owned.iter().map(|(k, v)| (k.clone(), v.as_slice())).collect();
    materialise_all(views, &storages)
}

/// What the pickles of a legacy file say: the state dict's views, the storages in the order their bytes follow,
/// and where the first one starts.
struct LegacyLayout {
    views: Vec<View>,
    storages: Vec<StorageId>,
    start: usize,
}

impl LegacyLayout {
    /// The pickles at the start of `bytes` (the whole file, or its first bytes).
    fn read(bytes: &[u8]) -> R<LegacyLayout> {
        let mut pos = LEGACY_MAGIC.len();
        let mut next = |what: &str| -> R<Object> {
            let (o, len) = read_pickle(bytes.get(pos..).unwrap_or_default(), what)?;
            pos += len;
            Ok(o)
        };
        let protocol = next("protocol version")?;
        if int(&protocol).ok() != Some(1001) {
            return Err(format!("legacy protocol version {}, expected 1001", describe(&protocol)));
        }
        let _sys_info = next("system info")?;
        let obj = next("state dict")?;
        let keys = match next("storage keys")? {
            Object::List(k) | Object::Tuple(k) => k,
            other => return Err(format!("expected the list of storage keys, found {}", describe(&other))),
        };
        let views = state_dict_views(&obj)?;
        let ids = all_storages(&obj)?;
        let mut storages = Vec::with_capacity(keys.len().min(ids.len()));
        let mut listed = std::collections::HashSet::new();
        for k in keys {
            let Object::Unicode(k) = k else {
                return Err(format!("a storage key is {}, expected a string", describe(&k)));
            };
            let id =
                ids.get(&k).ok_or_else(|| format!("storage {k} is listed, but nothing in the checkpoint uses it"))?;
            if !listed.insert(k.clone()) {
                return Err(format!("storage {k} is listed twice"));
            }
            storages.push(id.clone());
        }
        Ok(LegacyLayout { views, storages, start: pos })
    }

    /// The size of the file the pickles describe: the pickles, then each storage as its 8-byte element count and
    /// its elements. None when it overflows.
    fn file_size(&self) -> Option<u64> {
        self.storages.iter().try_fold(self.start as u64, |a, id| {
            (id.numel as u64).checked_mul(id.elem.size() as u64)?.checked_add(8)?.checked_add(a)
        })
    }
}

/// The largest prefix of a legacy file read to find its layout before the rest: the pickles of a real
/// checkpoint take a few hundred bytes per tensor.
pub(crate) const LEGACY_PREFIX: usize = 16 << 20;

/// Check, from the first bytes of a legacy file (at most `LEGACY_PREFIX`, or the whole file), that the storages
/// its pickles declare cover the file of `len` bytes exactly: a file of the wrong size is refused before the
/// rest of it is read.
pub(crate) fn check_legacy_size(prefix: &[u8], len: u64) -> R<()> {
    let layout = LegacyLayout::read(prefix).map_err(|e| {
        if (prefix.len() as u64) < len {
            format!(
                "{e} (in the first {} MiB of the file; the pickles of a checkpoint are far smaller)",
                prefix.len() >> 20
            )
        } else {
            e
        }
    })?;
    match layout.file_size() {
        Some(want) if want == len => Ok(()),
        want => Err(format!(
            "its pickles and the {} storages they declare take {} bytes, the file has {len}{}",
            layout.storages.len(),
            want.map_or("more than 2^64".to_string(), |w| w.to_string()),
            if want.is_some_and(|w| w > len) { " (truncated?)" } else { " (expected exactly that many)" }
        )),
    }
}

/// The legacy format: magic, protocol version, system info, the state dict, the list of storage keys, then
/// each storage as (i64 element count, raw little-endian elements) in that order, and nothing after.
pub(crate) fn load_legacy(bytes: &[u8]) -> R<super::Loaded> {
    let LegacyLayout { views, storages: ids, start } = LegacyLayout::read(bytes)?;
    let mut pos = start;
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    for id in &ids {
        let k = &id.key;
        let end = |pos: usize, n: usize| pos.checked_add(n).filter(|&e| e <= bytes.len());
        let head = end(pos, 8)
            .map(|e| &bytes[pos..e])
            .ok_or_else(|| format!("storage {k}: the file ends before it (truncated?)"))?;
        let n = u64::from_le_bytes(head.try_into().map_err(|_| "bad storage header")?);
        if n != id.numel as u64 {
            return Err(format!("storage {k}: the file announces {n} elements, the pickle says {}", id.numel));
        }
        pos += 8;
        let len = id.numel.checked_mul(id.elem.size()).ok_or_else(|| format!("storage {k}: absurd size {n}"))?;
        let stop = end(pos, len).ok_or_else(|| {
            format!("storage {k}: {len} bytes announced, the file has {} left (truncated?)", bytes.len() - pos)
        })?;
        storages.insert(k.clone(), &bytes[pos..stop]);
        pos = stop;
    }
    if pos != bytes.len() {
        return Err(format!(
            "its storages end at byte {pos}, the file has {} bytes ({} more, expected none)",
            bytes.len(),
            bytes.len() - pos
        ));
    }
    materialise_all(views, &storages)
}
