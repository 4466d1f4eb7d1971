//! ONNX tensors (initializers, `Constant` values, attributes) as candle tensors: floating types as f32, integer
//! types as i64, booleans as u8. Data inline (`raw_data` or the typed fields) or in an external file named by
//! the tensor's `location`, relative to the model's folder.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use onnx_protobuf::TensorProto;
use protobuf::Enum;
use std::path::{Component, Path, PathBuf};

/// Where a model's files are: the `.onnx` file (named in errors) and its folder (external data).
pub(crate) struct Source<'a> {
    pub file: &'a Path,
    pub dir: PathBuf,
}

impl Source<'_> {
    pub fn error(&self, msg: impl Into<String>) -> Error {
        Error::checkpoint(self.file, msg)
    }
}

/// The dims of an ONNX tensor, checked non-negative.
fn dims_of(t: &TensorProto, src: &Source) -> Result<Vec<usize>> {
    t.dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| src.error(format!("tensor `{}` has a negative dimension {d}", t.name)))
        })
        .collect()
}

/// The bytes of an externally stored tensor: `location` (relative, inside the model's folder), `offset`,
/// `length`.
fn external_bytes(t: &TensorProto, src: &Source, want: usize) -> Result<Vec<u8>> {
    let (mut location, mut offset, mut length) = (None, 0u64, None);
    for e in &t.external_data {
        match e.key.as_str() {
            "location" => location = Some(e.value.clone()),
            "offset" => {
                offset = e.value.parse().map_err(|_| {
                    src.error(format!("tensor `{}`: external data offset `{}` is not a number", t.name, e.value))
                })?
            }
            "length" => {
                length = Some(e.value.parse::<u64>().map_err(|_| {
                    src.error(format!("tensor `{}`: external data length `{}` is not a number", t.name, e.value))
                })?)
            }
            _ => {}
        }
    }
    let location = location
        .ok_or_else(|| src.error(format!("tensor `{}` is stored externally but names no `location`", t.name)))?;
    let rel = Path::new(&location);
    if rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(src.error(format!(
            "tensor `{}`: external data location `{location}` is not a file inside the model's folder",
            t.name
        )));
    }
    let path = src.dir.join(rel);
    // a folder, a named pipe (opening one waits for a writer) or a device is not a data file
    if let Ok(m) = std::fs::metadata(&path) {
        if !m.is_file() {
            return Err(src.error(format!(
                "tensor `{}`: external data location `{location}` names {}, not a data file",
                t.name,
                if m.is_dir() { "a folder" } else { "a special file (pipe, device or socket)" }
            )));
        }
    }
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&path).map_err(|e| {
        src.error(format!(
            "tensor `{}` is stored in `{}`, which cannot be opened ({e}); the data file must stay beside the model \
             under the name it was exported with",
            t.name,
            path.display()
        ))
    })?;
    let size = f.metadata().map_err(|e| Error::io(&path, e))?.len();
    let length = length.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(src.error(format!(
            "tensor `{}`: external data offset {offset} and length {length} reach past the end of `{}` ({size} \
             bytes)",
            t.name,
            path.display()
        )));
    }
    // the bytes the shape needs, checked before anything is allocated
    if length != want as u64 {
        return Err(src.error(format!(
            "tensor `{}` of shape {:?} needs {want} bytes, its external data (`{location}`) gives {length}",
            t.name, t.dims
        )));
    }
    f.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(&path, e))?;
    let mut buf = vec![0u8; length as usize];
    f.read_exact(&mut buf).map_err(|e| Error::io(&path, e))?;
    Ok(buf)
}

fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}
fn bf16_to_f32(bits: u16) -> f32 {
    half::bf16::from_bits(bits).to_f32()
}

/// An ONNX tensor as a candle tensor (f32, i64 or u8).
pub(crate) fn to_tensor(t: &TensorProto, src: &Source) -> Result<Tensor> {
    let dims = dims_of(t, src)?;
    let too_big = || src.error(format!("tensor `{}`: shape {dims:?} has more elements than memory can hold", t.name));
    let count: usize = dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).ok_or_else(too_big)?;
    // an empty tensor with a huge dimension (`[0, 2^62]`) would overflow the products of later ops
    if dims.iter().any(|d| *d > super::fold::MAX_VALUES) && count == 0 {
        return Err(too_big());
    }
    let dt = DataType::from_i32(t.data_type);
    let width = match dt {
        Some(DataType::FLOAT | DataType::INT32 | DataType::UINT32) => 4,
        Some(DataType::DOUBLE | DataType::INT64 | DataType::UINT64) => 8,
        Some(DataType::FLOAT16 | DataType::BFLOAT16 | DataType::INT16 | DataType::UINT16) => 2,
        Some(DataType::INT8 | DataType::UINT8 | DataType::BOOL) => 1,
        _ => {
            return Err(src.error(format!(
                "tensor `{}` has data type {} ({:?}); gradcam reads float, double, float16, bfloat16, integer and \
                 bool tensors",
                t.name,
                t.data_type,
                dt.map(|d| format!("{d:?}")).unwrap_or_else(|| "unknown".into())
            )))
        }
    };
    let bad_len = |got: usize| {
        src.error(format!(
            "tensor `{}` of shape {dims:?} should hold {count} values, its data holds {got} (truncated or corrupt \
             file?)",
            t.name
        ))
    };
    let external = t.data_location.enum_value() == Ok(DataLocation::EXTERNAL);
    let raw: Option<Vec<u8>> = if external {
        Some(external_bytes(t, src, count.checked_mul(width).ok_or_else(too_big)?)?)
    } else if !t.raw_data.is_empty() {
        Some(t.raw_data.clone())
    } else {
        None
    };
    let dev = Device::Cpu;
    enum V {
        F(Vec<f32>),
        I(Vec<i64>),
        B(Vec<u8>),
    }
    let v = if let Some(raw) = raw {
        if count.checked_mul(width) != Some(raw.len()) {
            return Err(bad_len(raw.len() / width));
        }
        let chunks = |w: usize| raw.chunks_exact(w);
        match dt {
            Some(DataType::FLOAT) => V::F(chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            Some(DataType::DOUBLE) => {
                V::F(chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32).collect())
            }
            Some(DataType::FLOAT16) => V::F(chunks(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()),
            Some(DataType::BFLOAT16) => {
                V::F(chunks(2).map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect())
            }
            Some(DataType::INT64) => {
                V::I(chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
            }
            Some(DataType::UINT64) => {
                V::I(chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as i64).collect())
            }
            Some(DataType::INT32) => {
                V::I(chunks(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect())
            }
            Some(DataType::UINT32) => {
                V::I(chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect())
            }
            Some(DataType::INT16) => V::I(chunks(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as i64).collect()),
            Some(DataType::UINT16) => V::I(chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as i64).collect()),
            Some(DataType::INT8) => V::I(raw.iter().map(|b| *b as i8 as i64).collect()),
            Some(DataType::UINT8) => V::I(raw.iter().map(|b| *b as i64).collect()),
            _ => V::B(raw.iter().map(|b| (*b != 0) as u8).collect()),
        }
    } else {
        let v = match dt {
            Some(DataType::FLOAT) => V::F(t.float_data.clone()),
            Some(DataType::DOUBLE) => V::F(t.double_data.iter().map(|v| *v as f32).collect()),
            Some(DataType::FLOAT16) => V::F(t.int32_data.iter().map(|v| f16_to_f32(*v as u16)).collect()),
            Some(DataType::BFLOAT16) => V::F(t.int32_data.iter().map(|v| bf16_to_f32(*v as u16)).collect()),
            Some(DataType::INT64) => V::I(t.int64_data.clone()),
            Some(DataType::UINT64 | DataType::UINT32) => V::I(t.uint64_data.iter().map(|v| *v as i64).collect()),
            Some(DataType::BOOL) => V::B(t.int32_data.iter().map(|v| (*v != 0) as u8).collect()),
            _ => V::I(t.int32_data.iter().map(|v| *v as i64).collect()),
        };
        let got = match &v {
            V::F(x) => x.len(),
            V::I(x) => x.len(),
            V::B(x) => x.len(),
        };
        if got != count {
            return Err(bad_len(got));
        }
        v
    };
    Ok(match v {
        V::F(x) => Tensor::from_vec(x, dims, &dev)?,
        V::I(x) => Tensor::from_vec(x, dims, &dev)?,
        V::B(x) => Tensor::from_vec(x, dims, &dev)?,
    })
}

/// The values of a small integer tensor (shapes, axes, indices).
pub(crate) fn ints(t: &Tensor) -> Result<Vec<i64>> {
    Ok(t.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?)
}

/// The values of a float tensor as f32.
pub(crate) fn floats(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use onnx_protobuf::StringStringEntryProto;

    fn external(location: &str, length: &str) -> TensorProto {
        let mut t = TensorProto::new();
        t.name = "w".into();
        t.dims = vec![2];
        t.data_type = DataType::FLOAT as i32;
        t.data_location = DataLocation::EXTERNAL.into();
        for (k, v) in [("location", location), ("offset", "0"), ("length", length)] {
            let mut e = StringStringEntryProto::new();
            e.key = k.into();
            e.value = v.into();
            t.external_data.push(e);
        }
        t
    }

    #[test]
    fn external_data_stays_in_the_models_folder_and_within_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("w.bin"), [0u8, 0, 128, 63, 0, 0, 0, 64]).unwrap();
        let file = dir.path().join("m.onnx");
        let src = Source { file: &file, dir: dir.path().to_path_buf() };
        let t = to_tensor(&external("w.bin", "8"), &src).unwrap();
        assert_eq!(t.to_vec1::<f32>().unwrap(), vec![1.0, 2.0]);
        for bad in ["../w.bin", "/etc/passwd", "sub/../../w.bin"] {
            let e = to_tensor(&external(bad, "8"), &src).unwrap_err().to_string();
            assert!(e.contains("not a file inside the model's folder") && e.contains("m.onnx"), "{bad}: {e}");
        }
        let e = to_tensor(&external("w.bin", "16"), &src).unwrap_err().to_string();
        assert!(e.contains("past the end of") && e.contains("m.onnx") && e.contains("w.bin"), "{e}");
        let e = to_tensor(&external("missing.bin", "8"), &src).unwrap_err().to_string();
        assert!(e.contains("missing.bin") && e.contains("beside the model"), "{e}");
        // inline data that does not match the shape
        let mut t = TensorProto::new();
        t.name = "short".into();
        t.dims = vec![3];
        t.data_type = DataType::FLOAT as i32;
        t.float_data = vec![1.0];
        let e = to_tensor(&t, &src).unwrap_err().to_string();
        assert!(e.contains("`short`") && e.contains("should hold 3 values"), "{e}");
    }
}
