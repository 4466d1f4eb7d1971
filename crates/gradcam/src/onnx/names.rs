//! PyTorch module paths from an ONNX node: the TorchScript exporter names nodes by scope
//! (`/features/features.12/conv/Conv`), the dynamo exporter keeps the scopes in each node's metadata
//! (`pkg.torch.onnx.name_scopes`: `['', 'layer1', 'layer1.0', 'layer1.0.bn1', '_native_batch_norm…']`, the last
//! entry the aten op) with the module classes beside them (`pkg.torch.onnx.class_hierarchy`).
//!
//! Scope segments are sometimes whole paths (`features.7.0`) and sometimes leaf names (`norm1`, `relu_1`): the
//! path is rebuilt by appending a leaf segment to the last whole path.

use super::tensor::Source;
use crate::graph::NodeId;
use onnx_protobuf::NodeProto;
use std::collections::HashMap;

/// What a node says about the module that made it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scope {
    /// The module path (`layer4.2.conv1`), None for a node made outside any module (a functional call at the
    /// top level) or by an exporter that records no scopes.
    pub path: Option<String>,
    /// The paths of the modules whose calls enclose the node, outermost first (`layer4`, `layer4.2`, …).
    pub chain: Vec<String>,
    /// Whether the node says where it was made at all (an exporter's own rewrite, a fused Split, says nothing:
    /// it belongs to the module call around it).
    pub known: bool,
    /// The module's class (`torch.nn.modules.batchnorm.BatchNorm2d`), where the exporter records it.
    pub class: Option<String>,
}

/// The path of each module called, outermost first: one per scope segment (a container that is never called
/// itself, a `ModuleList`, has none). A segment is a leaf name (`norm1`: appended), or its parent's segment with
/// a child added (`features.12` after `features`, `branch2.2` after `branch2`: it replaces that segment).
pub(crate) fn chain(segments: &[&str]) -> Vec<String> {
    // (the segment, the path before it)
    let mut stack: Vec<(String, String)> = vec![];
    let mut out: Vec<String> = vec![];
    for s in segments.iter().filter(|s| !s.is_empty()) {
        let path = out.last().cloned().unwrap_or_default();
        let base = match stack.last() {
            Some((prev, before)) if s.starts_with(&format!("{prev}.")) => before.clone(),
            _ => path,
        };
        out.push(if base.is_empty() { s.to_string() } else { format!("{base}.{s}") });
        stack.push((s.to_string(), base));
    }
    out
}

/// A Python list of strings as the exporter writes it (`['', 'layer1', "it's"]`).
fn python_strings(s: &str) -> Vec<String> {
    let mut out = vec![];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' || c == '"' {
            let mut cur = String::new();
            while let Some(d) = chars.next() {
                if d == '\\' {
                    if let Some(e) = chars.next() {
                        cur.push(e);
                    }
                } else if d == c {
                    break;
                } else {
                    cur.push(d);
                }
            }
            out.push(cur);
        }
    }
    out
}

fn meta<'a>(node: &'a NodeProto, key: &str) -> Option<&'a str> {
    node.metadata_props.iter().find(|m| m.key == key).map(|m| m.value.as_str())
}

/// The scope of a node, from the dynamo exporter's metadata or the TorchScript exporter's node name.
pub(crate) fn scope(node: &NodeProto) -> Scope {
    if let Some(list) = meta(node, "pkg.torch.onnx.name_scopes") {
        let segs = python_strings(list);
        let classes = meta(node, "pkg.torch.onnx.class_hierarchy").map(python_strings).unwrap_or_default();
        // the first entry is the root module (''), the last the op itself
        let modules: Vec<&str> = segs.iter().skip(1).take(segs.len().saturating_sub(2)).map(|s| s.as_str()).collect();
        let class = (classes.len() >= 2).then(|| classes[classes.len() - 2].clone());
        let chain = chain(&modules);
        let path = chain.last().cloned();
        return Scope { class: path.as_ref().and(class), path, chain, known: true };
    }
    let name = node.name.as_str();
    if let Some(rest) = name.strip_prefix('/') {
        let segs: Vec<&str> = rest.split('/').collect();
        let chain = chain(&segs[..segs.len().saturating_sub(1)]);
        return Scope { path: chain.last().cloned(), class: None, chain, known: true };
    }
    Scope::default()
}

/// Whether the exporter recorded module scopes at all (dynamo metadata or TorchScript names).
pub(crate) fn has_scopes(nodes: &[NodeProto]) -> bool {
    nodes.iter().any(|n| scope(n).path.is_some())
}

/// The module path a hook on which would see the values of a batch-norm folded into the convolution before it,
/// as torchvision names them: `features.0.0` → `features.0.1`, `conv1` → `bn1`, `conv` → `bn`, `conv0` →
/// `norm0`. A guess, for messages only.
pub(crate) fn likely_bn_after(conv: &str) -> Option<String> {
    let (parent, leaf) = match conv.rsplit_once('.') {
        Some((p, l)) => (format!("{p}."), l),
        None => (String::new(), conv),
    };
    if let Ok(k) = leaf.parse::<usize>() {
        return Some(format!("{parent}{}", k + 1));
    }
    leaf.strip_prefix("conv").map(|n| format!("{parent}bn{n}"))
}

/// The names of an imported graph's values.
pub(crate) struct Names {
    /// Module paths (each call's name: `layer1.0.relu`, `layer1.0.relu_1`) → the last node of that call.
    pub aliases: Vec<(String, NodeId)>,
    /// ONNX node and tensor names → their node.
    pub lookup: HashMap<String, NodeId>,
    /// Names that must not be targeted, with the reason (a convolution whose batch-norm the exporter folded).
    pub refused: HashMap<String, String>,
    /// Layer-norm modules (call names) in order, with their last node.
    pub layer_norms: Vec<(String, NodeId)>,
}

/// Collects names while a graph is imported.
pub(crate) struct Naming<'a> {
    src: &'a Source<'a>,
    /// Call name → last node, in order of first appearance.
    order: Vec<String>,
    last: HashMap<String, NodeId>,
    /// Call name → op types lowered within it.
    kinds: HashMap<String, Vec<&'static str>>,
    lookup: HashMap<String, NodeId>,
    refused: HashMap<String, String>,
    /// Module paths of the previous lowered node and their call names.
    prev: Vec<(String, String)>,
    calls: HashMap<String, usize>,
}

impl<'a> Naming<'a> {
    pub fn new(src: &'a Source<'a>) -> Self {
        Naming {
            src,
            order: vec![],
            last: HashMap::new(),
            kinds: HashMap::new(),
            lookup: HashMap::new(),
            refused: HashMap::new(),
            prev: vec![],
            calls: HashMap::new(),
        }
    }

    /// An ONNX tensor name for a node's value.
    pub fn tensor(&mut self, name: &str, id: NodeId) {
        self.lookup.entry(name.to_string()).or_insert(id);
    }

    /// An ONNX node name.
    pub fn node(&mut self, name: &str, id: NodeId) {
        self.lookup.entry(name.to_string()).or_insert(id);
    }

    /// An ONNX node `n` was lowered to `made` (empty for a node that passes its input on: Identity, Dropout).
    pub fn lowered(
        &mut self,
        n: &NodeProto,
        made: &[NodeId],
        vals: &HashMap<String, super::Val>,
        imp: &super::Importer,
    ) {
        let out = match made.last() {
            Some(id) => *id,
            None => match n.output.first().and_then(|o| vals.get(o)) {
                Some(super::Val::Node(id)) => *id,
                _ => return,
            },
        };
        let label = super::node_label(n);
        self.node(&label, out);
        let sc = scope(n);
        if !sc.known {
            return;
        }
        if sc.path.is_none() {
            self.prev.clear();
            return;
        }
        // every enclosing module call: a call starts where the previous lowered node was not inside it
        let mut now = vec![];
        for q in sc.chain.clone() {
            let call = match self.prev.iter().find(|(p, _)| *p == q) {
                Some((_, c)) => c.clone(),
                None => {
                    let k = self.calls.entry(q.clone()).or_insert(0);
                    let c = if *k == 0 { q.clone() } else { format!("{q}_{k}") };
                    *k += 1;
                    c
                }
            };
            if !self.last.contains_key(&call) {
                self.order.push(call.clone());
            }
            self.last.insert(call.clone(), out);
            let kinds = self.kinds.entry(call.clone()).or_default();
            for id in made {
                if let Some((k, _)) = imp.b.node_info(*id) {
                    kinds.push(k);
                }
            }
            now.push((q, call));
        }
        self.prev = now;
        if n.op_type == "Conv" {
            self.folded_conv(n, &sc, &label);
        }
    }

    /// A convolution the exporter folded a batch-norm into: the dynamo exporter names the node after the
    /// batch-norm (the convolution's name survives in its weight's), the TorchScript one after the convolution
    /// (its weight renamed `onnx::Conv_…`).
    fn folded_conv(&mut self, n: &NodeProto, sc: &Scope, label: &str) {
        let file = self.src.file.display();
        let weight = n.input.get(1).map(String::as_str).unwrap_or("");
        let Some(path) = &sc.path else { return };
        let tensor = n.output.first().map(String::as_str).unwrap_or("?");
        if sc.class.as_deref().is_some_and(|c| c.contains("BatchNorm")) {
            if let Some(conv) = weight.strip_suffix(".weight").filter(|c| c != path) {
                self.refused.insert(
                    conv.to_string(),
                    format!(
                        "`{conv}`: the exporter folded batch-norm `{path}` into this convolution, so the                          convolution's own output (before the batch-norm) is not in {file}; `{path}` names the                          folded output (what a hook on the batch-norm sees)"
                    ),
                );
            }
        } else if sc.class.is_none() && weight.starts_with("onnx::") && weight != format!("{path}.weight") {
            let bn = likely_bn_after(path).map(|b| format!(", `{b}`'s in the PyTorch model,")).unwrap_or_default();
            self.refused.insert(
                path.clone(),
                format!(
                    "`{path}`: the exporter folded the batch-norm after this convolution into it, so the                      convolution's own output (before the batch-norm) is not in {file}; ONNX node `{label}` (tensor                      `{tensor}`) holds the batch-norm's output{bn} what a hook on that batch-norm sees: target it                      by that name, or the block around it"
                ),
            );
        }
    }

    pub fn finish(self, node_names: impl Fn(&str) -> bool) -> Names {
        let mut aliases = vec![];
        let mut taken: HashMap<&str, NodeId> = HashMap::new();
        for call in &self.order {
            if self.refused.contains_key(call) || node_names(call) {
                continue;
            }
            let id = self.last[call];
            taken.insert(call, id);
            aliases.push((call.clone(), id));
        }
        let lookup = self.lookup.into_iter().filter(|(k, _)| !taken.contains_key(k.as_str())).collect();
        let is_ln = |k: &[&str]| {
            (k.contains(&"LayerNorm") || (k.contains(&"ReduceMean") && k.contains(&"Sqrt")))
                && !k.iter().any(|x| matches!(*x, "MatMul" | "Linear" | "Conv2d" | "Softmax"))
        };
        let layer_norms = self
            .order
            .iter()
            .filter(|c| self.kinds.get(*c).is_some_and(|k| is_ln(k)))
            .filter(|c| taken.contains_key(c.as_str()))
            .map(|c| (c.clone(), self.last[c]))
            .collect();
        Names { aliases, lookup, refused: self.refused, layer_norms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_rebuilt_from_whole_and_leaf_segments() {
        let rebuild = |s: &[&str]| chain(s).pop();
        assert_eq!(rebuild(&["features", "features.12", "features.12.2"]).as_deref(), Some("features.12.2"));
        assert_eq!(rebuild(&["layer1", "layer1.0", "relu_1"]).as_deref(), Some("layer1.0.relu_1"));
        assert_eq!(
            rebuild(&["encoder", "layers", "encoder_layer_1", "ln_1"]).as_deref(),
            Some("encoder.layers.encoder_layer_1.ln_1")
        );
        assert_eq!(rebuild(&["features", "features.7.0", "norm1"]).as_deref(), Some("features.7.0.norm1"));
        assert_eq!(rebuild(&[]), None);
        assert_eq!(rebuild(&["stage4", "stage4.0", "branch2", "branch2.2"]).as_deref(), Some("stage4.0.branch2.2"));
        assert_eq!(rebuild(&["layer1", "layer1.0", "layer1.0.bn1"]).as_deref(), Some("layer1.0.bn1"));
    }

    #[test]
    fn scopes_from_both_exporters() {
        let mut n = NodeProto::new();
        n.name = "/layer4/layer4.1/relu_1/Relu".into();
        assert_eq!(scope(&n).path.as_deref(), Some("layer4.1.relu_1"));
        n.name = "Identity_3".into();
        assert_eq!(scope(&n).path, None);
        let mut d = NodeProto::new();
        d.name = "node_Conv_295".into();
        let mut m = onnx_protobuf::StringStringEntryProto::new();
        m.key = "pkg.torch.onnx.name_scopes".into();
        m.value = "['', 'layer1', 'layer1.0', 'layer1.0.bn1', '_native_batch_norm_legit_no_training_1']".into();
        d.metadata_props.push(m);
        let mut c = onnx_protobuf::StringStringEntryProto::new();
        c.key = "pkg.torch.onnx.class_hierarchy".into();
        c.value = "['torchvision.models.resnet.ResNet', 'torch.nn.modules.container.Sequential', \
                   'torchvision.models.resnet.BasicBlock', 'torch.nn.modules.batchnorm.BatchNorm2d', \
                   'aten._native_batch_norm_legit_no_training.default']"
            .into();
        d.metadata_props.push(c);
        let s = scope(&d);
        assert_eq!(s.path.as_deref(), Some("layer1.0.bn1"));
        assert_eq!(s.class.as_deref(), Some("torch.nn.modules.batchnorm.BatchNorm2d"));
    }

    #[test]
    fn batch_norm_names_after_a_convolution() {
        assert_eq!(likely_bn_after("features.0.0").as_deref(), Some("features.0.1"));
        assert_eq!(likely_bn_after("layer1.0.conv2").as_deref(), Some("layer1.0.bn2"));
        assert_eq!(likely_bn_after("relu"), None);
    }
}
