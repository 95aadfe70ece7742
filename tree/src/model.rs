//! The trained tree: nodes in creation order (the root is node 0), prediction on raw or
//! binned rows. Serialized as part of the model file (see the driver's `model` module).

use serde::{Deserialize, Serialize};

use crate::{Forest, TreeError};

/// Index of a node in [`Tree::nodes`]; children are created in ascending parent order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u32);

impl NodeId {
    pub const ROOT: NodeId = NodeId(0);
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a split node routes a row: `value <= threshold` (equivalently `bin <= threshold_bin`)
/// goes left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub feature: u32,
    pub threshold: f64,
    pub threshold_bin: u8,
    pub gain: f64,
    pub left: NodeId,
    pub right: NodeId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub depth: u32,
    /// Training rows of each class that reached this node.
    pub class_counts: Vec<u64>,
    pub impurity: f64,
    /// Majority class; ties go to the lowest class index.
    pub prediction: u32,
    /// `None` for a leaf.
    pub split: Option<Split>,
}

impl Node {
    pub fn new(id: NodeId, depth: u32, class_counts: Vec<u64>, impurity: f64) -> Self {
        let prediction = majority_class(&class_counts);
        Node { id, depth, class_counts, impurity, prediction, split: None }
    }
    pub fn count(&self) -> u64 {
        self.class_counts.iter().sum()
    }
}

/// Index of the largest count, the lowest index on ties.
pub fn majority_class(counts: &[u64]) -> u32 {
    let mut best = 0;
    for (class, &count) in counts.iter().enumerate() {
        if count > counts[best] {
            best = class;
        }
    }
    best as u32
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub num_features: u32,
    pub num_classes: u32,
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Checks the shape of a tree that came from a file or the network.
    pub fn validate(&self) -> Result<(), TreeError> {
        let bad = |detail: String| Err(TreeError::MalformedTree { detail });
        if self.nodes.is_empty() {
            return bad("no nodes".into());
        }
        for (index, node) in self.nodes.iter().enumerate() {
            if node.id.index() != index {
                return bad(format!("node at position {index} has id {}", node.id));
            }
            if node.prediction >= self.num_classes {
                return bad(format!("node {index} predicts class {} of {}", node.prediction, self.num_classes));
            }
            if let Some(split) = &node.split {
                if split.feature >= self.num_features {
                    return bad(format!("node {index} splits on feature {} of {}", split.feature, self.num_features));
                }
                // Children come after their parent, which also rules out cycles.
                for child in [split.left, split.right] {
                    if child.index() <= index || child.index() >= self.nodes.len() {
                        return bad(format!("node {index} has child {child} out of order or range"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Walks from the root; `goes_left(feature, split)` decides each step.
    fn leaf_for(&self, mut goes_left: impl FnMut(usize, &Split) -> bool) -> &Node {
        let mut node = &self.nodes[0];
        while let Some(split) = &node.split {
            let next = if goes_left(split.feature as usize, split) { split.left } else { split.right };
            node = &self.nodes[next.index()];
        }
        node
    }

    /// The leaf a row of raw feature values reaches.
    pub fn leaf(&self, row: &[f64]) -> &Node {
        self.leaf_for(|f, split| row[f] <= split.threshold)
    }

    /// The leaf a binned row reaches; `bin(feature)` reads the row.
    pub fn leaf_binned(&self, mut bin: impl FnMut(usize) -> u8) -> &Node {
        self.leaf_for(|f, split| bin(f) <= split.threshold_bin)
    }

    /// Predicts from raw feature values (the model file's path).
    pub fn predict(&self, row: &[f64]) -> u32 {
        self.leaf(row).prediction
    }

    /// Predicts from binned values (the executors' path); `bin(feature)` reads the row.
    pub fn predict_binned(&self, bin: impl FnMut(usize) -> u8) -> u32 {
        self.leaf_binned(bin).prediction
    }

    pub fn depth(&self) -> u32 {
        self.nodes.iter().map(|n| n.depth).max().unwrap_or(0)
    }

    pub fn num_leaves(&self) -> usize {
        self.nodes.iter().filter(|n| n.split.is_none()).count()
    }

    /// An indented, human-readable dump, used in snapshot tests and `--verbose` output.
    pub fn dump(&self, feature_names: &[String]) -> String {
        let mut out = String::new();
        let mut stack = vec![(NodeId::ROOT, 0usize, String::new())];
        while let Some((id, indent, prefix)) = stack.pop() {
            let node = &self.nodes[id.index()];
            let pad = "  ".repeat(indent);
            match &node.split {
                Some(s) => {
                    let name = feature_names.get(s.feature as usize).map_or("?", String::as_str);
                    out.push_str(&format!("{pad}{prefix}{name} <= {} (n={}, gain={:.6})\n", s.threshold, node.count(), s.gain));
                    stack.push((s.right, indent + 1, "else: ".into()));
                    stack.push((s.left, indent + 1, "then: ".into()));
                }
                None => out.push_str(&format!("{pad}{prefix}class {} {:?}\n", node.prediction, node.class_counts)),
            }
        }
        out
    }
}

/// What test rows are scored with: a single tree or a forest.
#[derive(Debug, Clone, Copy)]
pub enum Model<'a> {
    Tree(&'a Tree),
    Forest(&'a Forest),
}

impl Model<'_> {
    /// Predicts from binned values; `bin(feature)` reads the row.
    pub fn predict_binned(&self, bin: &dyn Fn(usize) -> u8) -> u32 {
        match self {
            Model::Tree(tree) => tree.predict_binned(bin),
            Model::Forest(forest) => forest.predict_binned(bin),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stump() -> Tree {
        let mut root = Node::new(NodeId(0), 0, vec![3, 3], 0.5);
        root.split = Some(Split { feature: 1, threshold: 2.5, threshold_bin: 1, gain: 0.5, left: NodeId(1), right: NodeId(2) });
        Tree {
            num_features: 2,
            num_classes: 2,
            nodes: vec![root, Node::new(NodeId(1), 1, vec![3, 0], 0.0), Node::new(NodeId(2), 1, vec![0, 3], 0.0)],
        }
    }

    #[test]
    fn predicts_raw_and_binned_alike() {
        let t = stump();
        assert_eq!((t.predict(&[9.0, 2.5]), t.predict(&[9.0, 2.6])), (0, 1));
        assert_eq!((t.predict_binned(|_| 1), t.predict_binned(|_| 2)), (0, 1));
        assert_eq!(t.validate(), Ok(()));
    }

    #[test]
    fn majority_ties_go_low() {
        assert_eq!(majority_class(&[2, 5, 5]), 1);
        assert_eq!(majority_class(&[0, 0]), 0);
    }

    #[test]
    fn malformed_trees_are_rejected() {
        let mut t = stump();
        if let Some(s) = t.nodes[0].split.as_mut() {
            s.left = NodeId(0);
        }
        assert!(matches!(t.validate(), Err(TreeError::MalformedTree { .. })));
        let mut t = stump();
        t.nodes[2].prediction = 7;
        assert!(matches!(t.validate(), Err(TreeError::MalformedTree { .. })));
    }
}
