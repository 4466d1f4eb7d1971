//! PyTorch pickled checkpoints, zip and legacy. The pickle stream is parsed with candle's pickle VM
//! (`candle_core::pickle::Stack`); what it describes (storages, offsets, sizes, strides) is resolved here,
//! including non-contiguous views that candle's own reader rejects.

use candle_core::pickle::{Object, Stack};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::io::{Cursor, Read};

type R<T> = std::result::Result<T, String>;

/// A legacy file starts with the pickled magic number 0x1950a86a20f9469cfc6c (protocol 2, LONG1 of 10 bytes).
pub(crate) const LEGACY_MAGIC: [u8; 15] =
    [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Elem {
    fn from_storage(class: &str) -> R<Elem> {
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
            other => return Err(format!("unsupported storage type {other}")),
        })
    }
    fn size(self) -> usize {
        match self {
            Elem::F64 | Elem::I64 => 8,
            Elem::F32 | Elem::I32 => 4,
            Elem::F16 | Elem::BF16 | Elem::I16 => 2,
            Elem::I8 | Elem::U8 | Elem::Bool => 1,
        }
    }
    fn read(self, b: &[u8]) -> f32 {
        match self {
            Elem::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Elem::F64 => f64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])) as f32,
            Elem::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            Elem::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            Elem::I64 => i64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])) as f32,
            Elem::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            Elem::I16 => i16::from_le_bytes([b[0], b[1]]) as f32,
            Elem::I8 => b[0] as i8 as f32,
            Elem::U8 | Elem::Bool => b[0] as f32,
        }
    }
}

/// A tensor as the pickle describes it: a view into a storage.
#[derive(Debug)]
struct View {
    name: String,
    storage_key: String,
    elem: Elem,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

fn int(o: &Object) -> R<i64> {
    match o {
        Object::Int(i) => Ok(*i as i64),
        Object::Long(i) => Ok(*i),
        other => Err(format!("expected an integer, found {other:?}")),
    }
}

fn usizes(o: &Object) -> R<Vec<usize>> {
    match o {
        Object::Tuple(v) | Object::List(v) => v
            .iter()
            .map(|x| int(x).and_then(|i| usize::try_from(i).map_err(|_| format!("negative size {i}"))))
            .collect(),
        other => Err(format!("expected a tuple of integers, found {other:?}")),
    }
}

fn is_class(o: &Object, module: &str, class: &str) -> bool {
    matches!(o, Object::Class { module_name, class_name } if module_name == module && class_name == class)
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
        return Ok(None);
    }
    let Object::Tuple(a) = args.as_ref() else {
        return Err(format!("tensor `{name}`: malformed arguments"));
    };
    if a.len() < 4 {
        return Err(format!("tensor `{name}`: {} arguments, expected at least 4", a.len()));
    }
    let Object::PersistentLoad(pid) = &a[0] else {
        return Err(format!("tensor `{name}`: its storage is not a persistent reference"));
    };
    let Object::Tuple(pid) = pid.as_ref() else {
        return Err(format!("tensor `{name}`: malformed storage id"));
    };
    if pid.len() < 5 {
        return Err(format!("tensor `{name}`: storage id has {} fields, expected 5 or more", pid.len()));
    }
    let elem = match &pid[1] {
        Object::Class { class_name, .. } => {
            Elem::from_storage(class_name).map_err(|e| format!("tensor `{name}`: {e}"))?
        }
        other => return Err(format!("tensor `{name}`: unknown storage type {other:?}")),
    };
    let storage_key = match &pid[2] {
        Object::Unicode(s) => s.clone(),
        other => return Err(format!("tensor `{name}`: storage key {other:?} is not a string")),
    };
    let offset = usize::try_from(int(&a[1])?).map_err(|_| format!("tensor `{name}`: negative offset"))?;
    let size = usizes(&a[2]).map_err(|e| format!("tensor `{name}`: size: {e}"))?;
    let stride = usizes(&a[3]).map_err(|e| format!("tensor `{name}`: stride: {e}"))?;
    if size.len() != stride.len() {
        return Err(format!("tensor `{name}`: {} sizes but {} strides", size.len(), stride.len()));
    }
    Ok(Some(View { name: name.to_string(), storage_key, elem, offset, size, stride }))
}

/// The tensors of a (possibly nested) state dict.
fn collect_views(obj: &Object) -> R<Vec<View>> {
    let Object::Dict(items) = obj else {
        return Err("the checkpoint is not a dictionary of tensors (a whole pickled model is not supported: save its state_dict)".into());
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
                if let Ok(v) = collect_views(v) {
                    if !v.is_empty() {
                        return Ok(v);
                    }
                }
            }
        }
    }
    Ok(views)
}

/// Materialise a contiguous f32 tensor from a strided view of a storage.
fn materialise(v: &View, storage: &[u8]) -> R<Tensor> {
    let es = v.elem.size();
    let numel_storage = storage.len() / es;
    let numel: usize = v.size.iter().product();
    if numel > 0 {
        let last = v.offset + v.size.iter().zip(&v.stride).map(|(s, st)| (s - 1) * st).sum::<usize>();
        if last >= numel_storage {
            return Err(format!(
                "tensor `{}`: its view (offset {}, size {:?}, stride {:?}) reaches element {last} of a storage of {numel_storage} (file truncated?)",
                v.name, v.offset, v.size, v.stride
            ));
        }
    }
    let mut out = Vec::with_capacity(numel);
    let nd = v.size.len();
    let mut idx = vec![0usize; nd];
    for _ in 0..numel {
        let pos = v.offset + idx.iter().zip(&v.stride).map(|(i, s)| i * s).sum::<usize>();
        out.push(v.elem.read(&storage[pos * es..(pos + 1) * es]));
        for d in (0..nd).rev() {
            idx[d] += 1;
            if idx[d] < v.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Tensor::from_vec(out, v.size.clone(), &Device::Cpu).map_err(|e| e.to_string())
}

fn read_pickle(r: &mut Cursor<&[u8]>, what: &str) -> R<Object> {
    let mut stack = Stack::empty();
    stack.read_loop(r).map_err(|e| format!("cannot parse the {what} pickle: {e}"))?;
    stack.finalize().map_err(|e| format!("cannot parse the {what} pickle: {e}"))
}

/// PyTorch's zip format: `<dir>/data.pkl` describes the tensors, `<dir>/data/<key>` holds each storage.
pub(crate) fn load_zip(bytes: &[u8]) -> R<HashMap<String, Tensor>> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("not a readable zip file: {e}"))?;
    let pkl = zip
        .file_names()
        .find(|n| n.ends_with("data.pkl"))
        .map(str::to_string)
        .ok_or("a zip file without data.pkl: not a PyTorch checkpoint")?;
    let dir = pkl.trim_end_matches("data.pkl").to_string();
    let mut data = vec![];
    zip.by_name(&pkl)
        .and_then(|mut f| f.read_to_end(&mut data).map_err(Into::into))
        .map_err(|e| format!("cannot read {pkl}: {e}"))?;
    let obj = read_pickle(&mut Cursor::new(&data[..]), "data.pkl")?;
    let views = collect_views(&obj)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = HashMap::new();
    for v in views {
        if !storages.contains_key(&v.storage_key) {
            let name = format!("{dir}data/{}", v.storage_key);
            let mut buf = vec![];
            zip.by_name(&name)
                .and_then(|mut f| f.read_to_end(&mut buf).map_err(Into::into))
                .map_err(|e| format!("tensor `{}`: cannot read its storage {name}: {e}", v.name))?;
            storages.insert(v.storage_key.clone(), buf);
        }
        let t = materialise(&v, &storages[&v.storage_key])?;
        out.insert(v.name, t);
    }
    Ok(out)
}

/// The legacy format: magic, protocol version, system info, the state dict, the list of storage keys, then
/// each storage as (i64 element count, raw little-endian elements) in that order.
pub(crate) fn load_legacy(bytes: &[u8]) -> R<HashMap<String, Tensor>> {
    let mut r = Cursor::new(bytes);
    r.set_position(LEGACY_MAGIC.len() as u64);
    let protocol = read_pickle(&mut r, "protocol version")?;
    if int(&protocol).ok() != Some(1001) {
        return Err(format!("unsupported legacy protocol version {protocol:?}"));
    }
    let _sys_info = read_pickle(&mut r, "system info")?;
    let obj = read_pickle(&mut r, "state dict")?;
    let views = collect_views(&obj)?;
    let keys = match read_pickle(&mut r, "storage keys")? {
        Object::List(k) | Object::Tuple(k) => k,
        other => return Err(format!("expected the list of storage keys, found {other:?}")),
    };
    let elem_of: HashMap<&str, Elem> = views.iter().map(|v| (v.storage_key.as_str(), v.elem)).collect();
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    let mut pos = r.position() as usize;
    for k in keys {
        let Object::Unicode(k) = k else {
            return Err("a storage key is not a string".into());
        };
        let es = elem_of.get(k.as_str()).map_or(1, |e| e.size());
        let head =
            bytes.get(pos..pos + 8).ok_or_else(|| format!("storage {k}: the file ends before it (truncated?)"))?;
        let n = u64::from_le_bytes(head.try_into().map_err(|_| "bad storage header")?) as usize;
        let len = n.checked_mul(es).ok_or_else(|| format!("storage {k}: absurd size {n}"))?;
        let body = bytes
            .get(pos + 8..pos + 8 + len)
            .ok_or_else(|| format!("storage {k}: {len} bytes announced, the file ends before (truncated?)"))?;
        storages.insert(k, body);
        pos += 8 + len;
    }
    let mut out = HashMap::new();
    for v in views {
        let s = storages
            .get(&v.storage_key)
            .ok_or_else(|| format!("tensor `{}`: its storage {} is not in the file", v.name, v.storage_key))?;
        let t = materialise(&v, s)?;
        out.insert(v.name, t);
    }
    Ok(out)
}
