//! A network as a graph of ops: nodes (an [`Op`], its inputs, a name) in topological order, any DAG (fan-out,
//! concatenation, residual sums, broadcast products). Architectures are forward-only builders over
//! [`Builder`]; [`exec`] runs a graph (untracked up to what a request needs, taped beyond, its own backward),
//! with [`passes`] that map chains of nodes onto the fused kernels without hiding a node a request targets.
//!
//! Names are PyTorch module paths (`layer4.2.conv2`): a node is named after the module whose call made it;
//! a module called again gets `_1`, `_2`, … (as TorchScript's exporter does: torchvision's Bottleneck calls
//! its `relu` three times); a container (`layer4`, `layer4.2`, `features`) is an alias of its last node's output,
//! what a forward hook on it sees.

pub mod exec;
pub mod nodes;
pub mod op;
pub mod passes;

use crate::error::{Error, Result};
pub use op::{Ctx, Op, Saves};
use std::collections::HashMap;
use std::sync::Arc;

/// A node's index: nodes are stored in topological order, the input first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

pub struct Node {
    pub name: String,
    pub op: Arc<dyn Op>,
    pub inputs: Vec<NodeId>,
    /// The module writes its output over its first input (`nn.ReLU(inplace=True)`, `out += identity`): a
    /// forward hook on the module that made that input sees this node's value (see [`Graph::hook_value`]).
    pub inplace: bool,
}

/// The graph's input placeholder (node 0).
pub struct Input;

impl Op for Input {
    fn kind(&self) -> &'static str {
        "Input"
    }
    fn forward(&self, _: &[&candle_core::Tensor]) -> candle_core::Result<candle_core::Tensor> {
        candle_core::bail!("the input node has no forward pass")
    }
    fn backward(&self, _: &Ctx, _: crate::ops::Grad) -> candle_core::Result<Vec<Option<crate::ops::Grad>>> {
        Ok(vec![])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

pub struct Graph {
    nodes: Vec<Node>,
    output: NodeId,
    /// Container names → the node whose output they are, in the order declared.
    aliases: Vec<(String, NodeId)>,
    by_name: HashMap<String, NodeId>,
    consumers: Vec<Vec<NodeId>>,
    /// Every value is computed image by image (an imported graph: its shapes were fixed for one image, and a
    /// value's first dimension need not be the batch's).
    per_image: bool,
    plans: std::sync::Mutex<HashMap<Vec<NodeId>, Arc<exec::Plan>>>,
    folds: std::sync::Mutex<HashMap<NodeId, nodes::Conv>>,
}

impl Graph {
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }
    pub fn input(&self) -> NodeId {
        NodeId(0)
    }
    pub fn output(&self) -> NodeId {
        self.output
    }
    /// Whether the graph runs image by image (see [`Builder::per_image`]).
    pub fn is_per_image(&self) -> bool {
        self.per_image
    }
    pub fn aliases(&self) -> &[(String, NodeId)] {
        &self.aliases
    }
    /// The nodes that read `id`'s output, in order.
    pub fn consumers(&self, id: NodeId) -> &[NodeId] {
        &self.consumers[id.0]
    }
    /// A node by name or alias.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }
    /// The node whose value a PyTorch forward hook on `id`'s module ends up holding: the hook keeps the output
    /// tensor, which in-place modules after it overwrite (DenseNet's `F.relu(features, inplace=True)` after
    /// `norm5`; a batch-norm followed by `ReLU(inplace=True)`). pytorch-grad-cam pairs that value with the
    /// gradient at `id` itself; so does gradcam, to give the reference's maps.
    pub fn hook_value(&self, id: NodeId) -> NodeId {
        let mut cur = id;
        while let Some(next) =
            self.consumers(cur).iter().find(|c| self.nodes[c.0].inplace && self.nodes[c.0].inputs.first() == Some(&cur))
        {
            cur = *next;
        }
        cur
    }

    /// The name a user sees for a node: its shortest alias, else its own name.
    pub fn display_name(&self, id: NodeId) -> &str {
        self.aliases
            .iter()
            .filter(|(_, n)| *n == id)
            .map(|(a, _)| a.as_str())
            .min_by_key(|a| a.len())
            .filter(|a| a.len() < self.nodes[id.0].name.len())
            .unwrap_or(&self.nodes[id.0].name)
    }
}

/// Builds a [`Graph`] forward: `b.add("layer1.0.conv1", op, &[x])` returns the new node's id.
pub struct Builder {
    nodes: Vec<Node>,
    aliases: Vec<(String, NodeId)>,
    calls: HashMap<String, usize>,
    per_image: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Self {
        Builder {
            nodes: vec![Node { name: "input".into(), op: Arc::new(Input), inputs: vec![], inplace: false }],
            aliases: vec![],
            calls: HashMap::new(),
            per_image: false,
        }
    }

    pub fn input(&self) -> NodeId {
        NodeId(0)
    }

    /// A node for a call of module `name`; a second call of the same module is `name_1`, and so on.
    pub fn add(&mut self, name: &str, op: impl Op + 'static, inputs: &[NodeId]) -> NodeId {
        self.add_arc(name, Arc::new(op), inputs)
    }

    pub fn add_arc(&mut self, name: &str, op: Arc<dyn Op>, inputs: &[NodeId]) -> NodeId {
        let k = self.calls.entry(name.to_string()).or_insert(0);
        let name = if *k == 0 { name.to_string() } else { format!("{name}_{k}") };
        *k += 1;
        debug_assert!(inputs.iter().all(|i| i.0 < self.nodes.len()), "inputs must come before the node");
        self.nodes.push(Node { name, op, inputs: inputs.to_vec(), inplace: false });
        NodeId(self.nodes.len() - 1)
    }

    /// A node whose module overwrites its first input in place (PyTorch's `inplace=True`, `+=`).
    pub fn add_inplace(&mut self, name: &str, op: impl Op + 'static, inputs: &[NodeId]) -> NodeId {
        let id = self.add(name, op, inputs);
        self.nodes[id.0].inplace = true;
        id
    }

    /// Run the graph image by image: its ops' shapes hold for one image (an imported ONNX graph, whose reshapes
    /// were fixed for a batch of one and may move the batch away from the first dimension). Values of a batch of
    /// N are then the N images' values concatenated along the first dimension.
    pub fn per_image(&mut self) {
        self.per_image = true;
    }

    /// Mark a node as overwriting its first input in place (see [`Builder::add_inplace`]).
    pub fn set_inplace(&mut self, id: NodeId) {
        self.nodes[id.0].inplace = true;
    }

    /// A node's op type and inputs, while building.
    pub fn node_info(&self, id: NodeId) -> Option<(&'static str, Vec<NodeId>)> {
        self.nodes.get(id.0).map(|n| (n.op.kind(), n.inputs.clone()))
    }

    /// Whether a node of that name exists.
    pub fn has_node(&self, name: &str) -> bool {
        self.nodes.iter().any(|n| n.name == name)
    }

    /// Another name for a node's output (a container module: `layer4` for the last block's output).
    pub fn alias(&mut self, name: &str, id: NodeId) {
        self.aliases.push((name.to_string(), id));
    }

    pub fn finish(self, output: NodeId) -> Result<Graph> {
        let mut by_name = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if by_name.insert(n.name.clone(), NodeId(i)).is_some() {
                return Err(Error::invalid(format!("graph: two nodes are named `{}`", n.name)));
            }
        }
        for (a, id) in &self.aliases {
            match by_name.get(a) {
                Some(other) if other != id => {
                    return Err(Error::invalid(format!("graph: `{a}` names two different nodes")));
                }
                _ => {
                    by_name.insert(a.clone(), *id);
                }
            }
        }
        let mut consumers = vec![vec![]; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for inp in &n.inputs {
                if !consumers[inp.0].contains(&NodeId(i)) {
                    consumers[inp.0].push(NodeId(i));
                }
            }
        }
        Ok(Graph {
            nodes: self.nodes,
            output,
            aliases: self.aliases,
            by_name,
            consumers,
            per_image: self.per_image,
            plans: Default::default(),
            folds: Default::default(),
        })
    }
}
