//! A node's attributes by name, with the spec's defaults given by the caller.

use crate::error::Result;
use candle_core::Tensor;
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
