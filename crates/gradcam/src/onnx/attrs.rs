//! A node's attributes by name, with the spec's defaults given by the caller.

use crate::error::Result;
use candle_core::Tensor;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::NodeProto;

pub(crate) struct Attrs<'a> {
    pub node: &'a NodeProto,
    pub src: Option<&'a super::tensor::Source<'a>>,
}

impl<'a> Attrs<'a> {
    fn get(&self, name: &str) -> Option<&'a onnx_protobuf::AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }
    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    pub fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.get(name).map(|a| a.floats.clone())
    }
    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        match (self.get(name).and_then(|a| a.t.as_ref()), self.src) {
            (Some(t), Some(src)) => Ok(Some(super::tensor::to_tensor(t, src)?)),
            (Some(t), None) => {
                let src = super::tensor::Source { file: std::path::Path::new("model"), dir: ".".into() };
                Ok(Some(super::tensor::to_tensor(t, &src)?))
            }
            (None, _) => Ok(None),
        }
    }
    /// How many outputs the node declares.
    pub fn outputs(&self) -> usize {
        self.node.output.len()
    }
}

/// The type the ONNX spec gives an attribute gradcam reads, by op and name (None: one gradcam does not read).
fn expected_type(op: &str, name: &str) -> Option<AttributeType> {
    use AttributeType as T;
    Some(match name {
        "value" if op == "Pad" => T::FLOAT,
        "value" => T::TENSOR,
        "axis"
        | "group"
        | "transA"
        | "transB"
        | "keepdims"
        | "ceil_mode"
        | "count_include_pad"
        | "allowzero"
        | "to"
        | "upper"
        | "fmod"
        | "noop_with_empty_axes"
        | "num_outputs"
        | "start"
        | "end"
        | "value_int" => T::INT,
        "strides" | "pads" | "kernel_shape" | "dilations" | "perm" | "starts" | "ends" | "split" | "value_ints" => {
            T::INTS
        }
        "axes" if op != "Pad" => T::INTS,
        "alpha" | "beta" | "epsilon" | "min" | "max" | "value_float" => T::FLOAT,
        "value_floats" => T::FLOATS,
        "auto_pad" | "mode" | "approximate" => T::STRING,
        _ => return None,
    })
}

/// Refuse an attribute of another type than the spec's (a `perm` given as one int would otherwise be read as no
/// perm at all). An attribute whose type is not recorded (very old writers) is read as it is.
pub(crate) fn check_types(node: &NodeProto) -> std::result::Result<(), String> {
    for a in &node.attribute {
        let Some(want) = expected_type(&node.op_type, &a.name) else { continue };
        match a.type_.enum_value() {
            Ok(AttributeType::UNDEFINED) => {}
            Ok(t) if t == want => {}
            got => {
                let got = got.map(|t| format!("{t:?}")).unwrap_or_else(|n| format!("unknown ({n})"));
                return Err(format!(
                    "attribute `{}` of a {} node has type {got}; the ONNX spec gives it type {want:?}",
                    a.name, node.op_type
                ));
            }
        }
    }
    Ok(())
}
