//! Level-wise tree growth over any source of histograms.
//!
//! ALGORITHM
//! 1. Ask the source for the root's histogram: class counts per feature and bin, summed over
//!    every training row wherever it lives.
//! 2. For each open node of the current depth, in ascending node id, find the best split
//!    (see `split`). A node with no valid split, a pure node, or one too small to split stays a
//!    leaf. Children get the next free ids, in that same order, so ids never depend on timing.
//! 3. Children that may split again need histograms. For each split whose children both need
//!    one, only the smaller child (fewer rows, by the global counts; left on ties) is built and
//!    the larger is derived as parent minus smaller.
//! 4. Send the decisions with a child that needs a histogram to the source, which routes its
//!    rows to the children (rows that reach only final leaves are never read again, so the last
//!    level routes nothing). The decisions form one log; their position in it makes a retried or
//!    replayed request safe. Then ask for the histograms, batched so that one batch fits
//!    `max_memory_mb`.
//! 5. Repeat from 2 with the children until `max_depth`.
//!
//! A random forest runs the same steps for all its trees at once (`grow_forest`): tree `t`'s root
//! is node `t`, every level decides the open nodes of every tree, and one request routes the rows
//! of all of them. The source weights each row per tree (its bootstrap sample), and each node
//! searches only the features drawn for it (`sampling::node_features`).
//!
//! Counts are integers, so the histograms, and therefore every decision, are the same bits
//! whatever the number of executors or partitions, and whatever order their answers arrive in.

use crate::bins::BinEdges;
use crate::forest::ForestPlan;
use crate::model::Split;
use crate::sampling::node_features;
use crate::split::best_split;
use crate::{HistogramLayout, Node, NodeHistogram, NodeId, SplitDecision, Tree, TreeError, ValidTreeParams};

/// Where histograms come from: partitions in this process, or executors over the network.
pub trait StatsSource {
    type Error: From<TreeError>;
    /// The histograms of `nodes`, summed over all training rows, in the order asked.
    fn histograms(&mut self, nodes: &[NodeId]) -> Result<Vec<NodeHistogram>, Self::Error>;
    /// Routes rows of the split nodes; `first_index` is the log position of `decisions[0]`.
    fn apply_splits(&mut self, first_index: usize, decisions: &[SplitDecision]) -> Result<(), Self::Error>;
}

/// What growing cost, for reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrowthStats {
    pub histogram_batches: u64,
    pub nodes_built: u64,
    pub nodes_derived: u64,
    pub nodes_split: u64,
}

/// Progress of growth, for logs.
#[derive(Debug, Clone)]
pub struct LevelDone {
    pub depth: u32,
    pub splits: usize,
    pub open_nodes_next: usize,
}

/// Grows one tree on every row and every feature.
pub fn grow_tree<S: StatsSource>(
    source: &mut S,
    edges: &BinEdges,
    num_classes: usize,
    params: &ValidTreeParams,
    on_level: impl FnMut(&LevelDone),
) -> Result<(Tree, GrowthStats), S::Error> {
    let plan = ForestPlan::single_tree(edges.num_features());
    let (mut trees, stats) = grow_forest(source, edges, num_classes, params, &plan, on_level)?;
    Ok((trees.remove(0), stats))
}

/// Where a node of the forest lives: its tree and its id within that tree.
#[derive(Debug, Clone, Copy)]
struct Place {
    tree: usize,
    local: NodeId,
}

/// Grows `plan.num_trees` trees together, level by level: each level decides the open nodes of
/// every tree, routes rows once, and asks for the children's histograms in one set of batches.
/// The source numbers nodes across the forest (tree `t`'s root is node `t`, children take the
/// next free ids); each returned tree numbers its own nodes from 0. A node splits on the
/// features [`node_features`] draws for it (all of them when `features_per_node` covers all).
pub fn grow_forest<S: StatsSource>(
    source: &mut S,
    edges: &BinEdges,
    num_classes: usize,
    params: &ValidTreeParams,
    plan: &ForestPlan,
    mut on_level: impl FnMut(&LevelDone),
) -> Result<(Vec<Tree>, GrowthStats), S::Error> {
    let layout = HistogramLayout::new(edges, num_classes);
    let num_features = edges.num_features();
    let mut stats = GrowthStats::default();
    let roots: Vec<NodeId> = (0..plan.num_trees).map(NodeId).collect();
    let root_hists = fetch(source, &roots, &layout, params, &mut stats)?;
    // `places[g]` is where forest-wide node `g` lives; `trees[t]` holds tree t's nodes.
    let mut places: Vec<Place> = Vec::new();
    let mut trees: Vec<Vec<Node>> = Vec::new();
    let mut open: Vec<(NodeId, NodeHistogram)> = Vec::new();
    for (t, (root, hist)) in roots.iter().zip(root_hists).enumerate() {
        let counts = hist.class_counts(&layout);
        let n = counts.iter().sum::<u64>();
        if n == 0 {
            return Err(TreeError::EmptyTrainingSet.into());
        }
        let node = Node::new(NodeId::ROOT, 0, counts.clone(), params.impurity.of(&counts, n));
        if may_split(&node, params) {
            open.push((*root, hist));
        }
        places.push(Place { tree: t, local: NodeId::ROOT });
        trees.push(vec![node]);
    }
    let mut log_len = 0usize;

    while !open.is_empty() {
        let depth = {
            let place = places[open[0].0.index()];
            trees[place.tree][place.local.index()].depth
        };
        // 2. Decide.
        let mut decisions = Vec::new();
        let mut parents = Vec::new();
        for (id, hist) in open {
            let Place { tree: t, local } = places[id.index()];
            let nodes = &mut trees[t];
            let parent_counts = nodes[local.index()].class_counts.clone();
            let features = node_features(plan.seed, t as u32, local, num_features, plan.features_per_node);
            let Some(best) = best_split(&hist, &layout, &parent_counts, params, &features) else { continue };
            let (left, right) = (NodeId(places.len() as u32), NodeId(places.len() as u32 + 1));
            let (local_left, local_right) = (NodeId(nodes.len() as u32), NodeId(nodes.len() as u32 + 1));
            let child = |id, counts: Vec<u64>| {
                let n = counts.iter().sum();
                Node::new(id, depth + 1, counts.clone(), params.impurity.of(&counts, n))
            };
            nodes.push(child(local_left, best.left_counts));
            nodes.push(child(local_right, best.right_counts));
            nodes[local.index()].split = Some(Split {
                feature: best.feature as u32,
                threshold: edges.features[best.feature].thresholds[usize::from(best.threshold_bin)],
                threshold_bin: best.threshold_bin,
                gain: best.gain,
                left: local_left,
                right: local_right,
            });
            places.push(Place { tree: t, local: local_left });
            places.push(Place { tree: t, local: local_right });
            decisions.push(SplitDecision { node: id, feature: best.feature as u32, threshold_bin: best.threshold_bin, left, right });
            parents.push(hist);
        }
        stats.nodes_split += decisions.len() as u64;
        if decisions.is_empty() {
            on_level(&LevelDone { depth, splits: 0, open_nodes_next: 0 });
            break;
        }
        // 3. Plan which children to build and which to derive.
        let node = |id: NodeId| {
            let place = places[id.index()];
            &trees[place.tree][place.local.index()]
        };
        let mut to_build = Vec::new();
        let mut plans = Vec::new();
        for d in &decisions {
            let (l, r) = (node(d.left), node(d.right));
            let (need_l, need_r) = (may_split(l, params), may_split(r, params));
            let smaller = if l.count() <= r.count() { d.left } else { d.right };
            let plan = match (need_l, need_r) {
                (true, true) => Plan::BuildAndDerive { built: smaller, derived: if smaller == d.left { d.right } else { d.left } },
                (true, false) => Plan::Build(d.left),
                (false, true) => Plan::Build(d.right),
                (false, false) => Plan::Nothing,
            };
            match plan {
                Plan::BuildAndDerive { built, .. } | Plan::Build(built) => to_build.push(built),
                Plan::Nothing => {}
            }
            plans.push(plan);
        }

        // 4. Route the rows of the splits whose children need a histogram; rows whose children
        //    are all final leaves (the last level, pure or small nodes) are never read again.
        let routed: Vec<SplitDecision> =
            decisions.iter().zip(&plans).filter(|(_, plan)| !matches!(plan, Plan::Nothing)).map(|(d, _)| *d).collect();
        if !routed.is_empty() {
            source.apply_splits(log_len, &routed)?;
            log_len += routed.len();
        }

        let mut built = fetch(source, &to_build, &layout, params, &mut stats)?.into_iter();
        let mut next = Vec::new();
        for (plan, parent) in plans.into_iter().zip(parents) {
            match plan {
                Plan::Nothing => {}
                Plan::Build(id) => next.push((id, built.next().ok_or(missing())?)),
                Plan::BuildAndDerive { built: b, derived } => {
                    let hist = built.next().ok_or(missing())?;
                    next.push((derived, hist.sibling_of(&parent, derived.0)?));
                    next.push((b, hist));
                    stats.nodes_derived += 1;
                }
            }
        }
        next.sort_by_key(|(id, _)| *id);
        on_level(&LevelDone { depth, splits: decisions.len(), open_nodes_next: next.len() });
        open = next;
    }
    let trees = trees.into_iter().map(|nodes| Tree { num_features: num_features as u32, num_classes: num_classes as u32, nodes }).collect();
    Ok((trees, stats))
}

enum Plan {
    Nothing,
    Build(NodeId),
    BuildAndDerive { built: NodeId, derived: NodeId },
}

fn missing() -> TreeError {
    TreeError::MalformedTree { detail: "source returned fewer histograms than asked".into() }
}

/// A node may split if it is above max depth, impure, and big enough for two children.
fn may_split(node: &Node, params: &ValidTreeParams) -> bool {
    let impure = node.class_counts.iter().filter(|&&c| c > 0).count() > 1;
    node.depth < params.max_depth && impure && node.count() >= 2 * params.min_instances_per_node
}

/// Asks for histograms in batches that fit the memory budget, checking each answer's size.
fn fetch<S: StatsSource>(
    source: &mut S,
    nodes: &[NodeId],
    layout: &HistogramLayout,
    params: &ValidTreeParams,
    stats: &mut GrowthStats,
) -> Result<Vec<NodeHistogram>, S::Error> {
    let budget = usize::try_from(params.max_memory_mb).unwrap_or(usize::MAX).saturating_mul(1 << 20);
    let per_batch = (budget / layout.bytes_per_node().max(1)).max(1);
    let mut out = Vec::with_capacity(nodes.len());
    for batch in nodes.chunks(per_batch) {
        let hists = source.histograms(batch)?;
        if hists.len() != batch.len() {
            return Err(missing().into());
        }
        for (node, hist) in batch.iter().zip(&hists) {
            if hist.counts.len() != layout.len() {
                return Err(TreeError::HistogramSizeMismatch { node: node.0, expected: layout.len(), found: hist.counts.len() }.into());
            }
        }
        stats.histogram_batches += 1;
        stats.nodes_built += batch.len() as u64;
        out.extend(hists);
    }
    Ok(out)
}
