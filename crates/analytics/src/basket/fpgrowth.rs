//! FP-growth (Han, Pei & Yin 2000) over `u32` item ids.
//!
//! Written here because no maintained crate provides it (see the module doc of [`super`]). Layout:
//! - items are ranked by descending count (ties by ascending id) and each basket becomes its sorted,
//!   de-duplicated list of frequent ranks; identical baskets are merged into one weighted path;
//! - an FP-tree is held in arena vectors (parent and item side by side, count and depth apart; node 0 is
//!   the root, nodes in depth-first pre-order) with a header table in CSR form (the nodes of each item).
//!   It is built without any child lookup: the paths are sorted lexicographically, so a path shares with
//!   the tree exactly its longest common prefix with the path before it, and only the remainder becomes
//!   new nodes;
//! - the first level keeps the global tree in that sorted-path form (the tree's root-to-leaf strings in
//!   pre-order) with, per item, the list of its occurrences. Retail baskets share few prefixes (on Online
//!   Retail at 1 % support the tree has 294,549 nodes for 336,255 basket entries), so the tree would save
//!   little, while an item's prefix paths are then contiguous slices read sequentially instead of walks
//!   to the root, which are chains of cache misses (this halved the mining time there);
//! - the conditional tree of an item is built from its prefix paths (weighted by the item's counts) after
//!   dropping the items that are infrequent in them. Items keep their global order, so a conditional
//!   tree only ever holds items ranked before the item it is conditioned on;
//! - a tree that is a single path is not recursed into: every combination of its nodes is frequent, with
//!   the count of its deepest node;
//! - the first-level items are mined in parallel (rayon), each into its own buffer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::Baskets;
use super::{BasketError, FrequentItemset};

const NIL: u32 = u32::MAX;

/// The part of an FP-tree node that a walk to the root reads, 8 bytes side by side: one cache line per
/// step, and half the footprint of a whole node (count and depth are read only at the start of a walk).
#[derive(Clone, Copy)]
struct Link {
    parent: u32,
    item: u32,
}

/// An FP-tree in arena form. Items are local indices `0..global.len()`, in the global rank order. Node 0
/// is the root; nodes are numbered in depth-first pre-order. Counts fit `u32` because the number of
/// baskets is checked to.
struct FpTree {
    links: Vec<Link>,
    count: Vec<u32>,
    /// Root 0; places an ancestor in a prefix path without a second walk.
    depth: Vec<u32>,
    header_start: Vec<u32>,
    header_nodes: Vec<u32>,
    item_count: Vec<u32>,
    /// Local item index → global rank.
    global: Vec<u32>,
    /// Every node's only child is the node created after it.
    single_path: bool,
}

/// A weighted path `buf[start..end]` of local item indices, ascending.
pub(super) type Path = (u32, u32, u32);

impl FpTree {
    /// Builds the tree of the weighted `paths` (slices of `buf`); `global` names the local items.
    fn from_paths(buf: &[u32], paths: &mut [Path], global: Vec<u32>) -> FpTree {
        let slice = |p: &Path| &buf[p.0 as usize..p.1 as usize];
        // Stable sort: prefix paths arrive nearly sorted (pre-order of the parent tree), which it exploits.
        paths.sort_by(|a, b| slice(a).cmp(slice(b)));
        let k = global.len();
        let cap = buf.len() + 1;
        let (mut links, mut count, mut depth) =
            (Vec::with_capacity(cap), Vec::with_capacity(cap), Vec::with_capacity(cap));
        links.push(Link { parent: 0, item: NIL });
        count.push(0);
        depth.push(0);
        let mut item_count = vec![0u32; k];
        let mut stack: Vec<u32> = Vec::new();
        let mut prev: &[u32] = &[];
        let mut single_path = true;
        for p in paths.iter() {
            let path = slice(p);
            let w = p.2;
            let lcp = path.iter().zip(prev).take_while(|(a, b)| a == b).count();
            stack.truncate(lcp);
            for &nd in &stack {
                count[nd as usize] += w;
            }
            for &item in &path[lcp..] {
                let parent = stack.last().copied().unwrap_or(0);
                let id = links.len() as u32;
                single_path &= parent + 1 == id;
                links.push(Link { parent, item });
                count.push(w);
                depth.push(stack.len() as u32 + 1);
                stack.push(id);
            }
            for &it in path {
                item_count[it as usize] += w;
            }
            prev = path;
        }
        // Header table: the nodes of each item, in creation order.
        let mut header_start = vec![0u32; k + 1];
        for nd in &links[1..] {
            header_start[nd.item as usize + 1] += 1;
        }
        for i in 0..k {
            header_start[i + 1] += header_start[i];
        }
        let mut fill = header_start.clone();
        let mut header_nodes = vec![0u32; links.len() - 1];
        for (id, nd) in links.iter().enumerate().skip(1) {
            let slot = &mut fill[nd.item as usize];
            header_nodes[*slot as usize] = id as u32;
            *slot += 1;
        }
        FpTree { links, count, depth, header_start, header_nodes, item_count, global, single_path }
    }

    fn n_items(&self) -> usize {
        self.global.len()
    }

    /// The conditional tree of local item `j`: its prefix paths, restricted to the items frequent in them.
    fn conditional(&self, j: usize, min_count: u64, s: &mut Scratch) -> Option<FpTree> {
        let heads = &self.header_nodes[self.header_start[j] as usize..self.header_start[j + 1] as usize];
        // One walk to the root per node of item j, copying its prefix path (items ranked before j only)
        // root first and counting the items in it.
        s.cnt.clear();
        s.cnt.resize(j, 0);
        s.paths.clear();
        s.leaves.clear();
        let mut len = 0u32;
        for &nd in heads {
            let d = self.depth[nd as usize];
            if d > 1 {
                s.paths.push((len, len + d - 1, self.count[nd as usize]));
                s.leaves.push(self.links[nd as usize].parent);
                len += d - 1;
            }
        }
        s.buf.clear();
        s.buf.resize(len as usize, 0);
        for (&(_, end, w), &leaf) in s.paths.iter().zip(&s.leaves) {
            let mut c = leaf;
            let mut at = end as usize;
            while c != 0 {
                let l = self.links[c as usize];
                at -= 1;
                s.buf[at] = l.item;
                s.cnt[l.item as usize] += w;
                c = l.parent;
            }
        }
        let global = frequent_prefix_items(j, min_count, &self.global, s)?;
        // Keep the frequent items, compacting in place: the write never passes the read.
        let mut write = 0usize;
        let mut kept = 0usize;
        for pi in 0..s.paths.len() {
            let (start, end, w) = s.paths[pi];
            let new_start = write;
            for r in start as usize..end as usize {
                let m = s.map[s.buf[r] as usize];
                if m != NIL {
                    s.buf[write] = m;
                    write += 1;
                }
            }
            if write > new_start {
                s.paths[kept] = (new_start as u32, write as u32, w);
                kept += 1;
            }
        }
        s.paths.truncate(kept);
        Some(FpTree::from_paths(&s.buf[..write], &mut s.paths, global))
    }
}

/// From the item counts in `s.cnt` (items `0..j` of a tree whose items are named by `names`), sets
/// `s.map` (old index → new index or `NIL`) and returns the names of the frequent ones, `None` if none is.
fn frequent_prefix_items(j: usize, min_count: u64, names: &[u32], s: &mut Scratch) -> Option<Vec<u32>> {
    s.map.clear();
    s.map.resize(j, NIL);
    let mut global = Vec::new();
    for ((&c, m), &name) in s.cnt.iter().zip(s.map.iter_mut()).zip(names) {
        if u64::from(c) >= min_count {
            *m = global.len() as u32;
            global.push(name);
        }
    }
    (!global.is_empty()).then_some(global)
}

/// The first level: the global FP-tree as its sorted, merged, weighted root-to-leaf paths, and for each
/// item the prefix before each of its occurrences.
struct FirstLevel {
    buf: Vec<u32>,
    /// Per item (CSR over `occ`): `(start, end, weight)` of the prefix before the item in one path.
    occ_start: Vec<u32>,
    occ: Vec<Path>,
    item_count: Vec<u32>,
    ranks: Vec<u32>,
}

impl FirstLevel {
    fn new(buf: Vec<u32>, mut paths: Vec<Path>, k: usize) -> FirstLevel {
        let slice = |p: &Path| &buf[p.0 as usize..p.1 as usize];
        paths.sort_unstable_by(|a, b| slice(a).cmp(slice(b)));
        // Merge identical baskets, in place: a second vector of paths was over 100 MB at ten million orders.
        paths.dedup_by(|later, kept| {
            let same = slice(later) == slice(kept);
            if same {
                kept.2 += later.2;
            }
            same
        });
        let mut occ_start = vec![0u32; k + 1];
        let mut item_count = vec![0u32; k];
        for p in &paths {
            for &r in slice(p) {
                occ_start[r as usize + 1] += 1;
                item_count[r as usize] += p.2;
            }
        }
        for i in 0..k {
            occ_start[i + 1] += occ_start[i];
        }
        let mut fill = occ_start.clone();
        let mut occ = vec![(0, 0, 0); occ_start[k] as usize];
        for &(start, end, w) in &paths {
            for at in start..end {
                let slot = &mut fill[buf[at as usize] as usize];
                occ[*slot as usize] = (start, at, w);
                *slot += 1;
            }
        }
        FirstLevel { buf, occ_start, occ, item_count, ranks: (0..k as u32).collect() }
    }

    /// The conditional tree of item `j` (a global rank), from its prefixes.
    fn conditional(&self, j: usize, min_count: u64, s: &mut Scratch) -> Option<FpTree> {
        let occ = &self.occ[self.occ_start[j] as usize..self.occ_start[j + 1] as usize];
        s.cnt.clear();
        s.cnt.resize(j, 0);
        for &(start, end, w) in occ {
            for &r in &self.buf[start as usize..end as usize] {
                s.cnt[r as usize] += w;
            }
        }
        let global = frequent_prefix_items(j, min_count, &self.ranks, s)?;
        s.buf.clear();
        s.paths.clear();
        for &(start, end, w) in occ {
            let new_start = s.buf.len();
            for &r in &self.buf[start as usize..end as usize] {
                let m = s.map[r as usize];
                if m != NIL {
                    s.buf.push(m);
                }
            }
            if s.buf.len() > new_start {
                s.paths.push((new_start as u32, s.buf.len() as u32, w));
            }
        }
        Some(FpTree::from_paths(&s.buf, &mut s.paths, global))
    }
}

/// Reusable buffers for building conditional trees (one set per worker thread).
#[derive(Default)]
struct Scratch {
    cnt: Vec<u32>,
    map: Vec<u32>,
    buf: Vec<u32>,
    paths: Vec<Path>,
    leaves: Vec<u32>,
}

/// Mining stopped because too many itemsets are frequent.
struct Exceeded;

/// Collects itemsets (as global ranks) in flat buffers and keeps the shared total under the limit.
struct Sink<'a> {
    items: Vec<u32>,
    ends: Vec<usize>,
    counts: Vec<u32>,
    pending: usize,
    total: &'a AtomicUsize,
    limit: usize,
}

impl<'a> Sink<'a> {
    fn new(total: &'a AtomicUsize, limit: usize) -> Self {
        Sink { items: Vec::new(), ends: Vec::new(), counts: Vec::new(), pending: 0, total, limit }
    }

    fn emit(&mut self, itemset: &[u32], count: u32) -> Result<(), Exceeded> {
        self.items.extend_from_slice(itemset);
        self.ends.push(self.items.len());
        self.counts.push(count);
        self.pending += 1;
        if self.pending >= 1024 { self.flush() } else { Ok(()) }
    }

    /// Adds the pending itemsets to the shared total; fails once the total passes the limit. The final
    /// total is the exact number of frequent itemsets, so success or failure does not depend on timing.
    fn flush(&mut self) -> Result<(), Exceeded> {
        let added = std::mem::take(&mut self.pending);
        let total = self.total.fetch_add(added, Ordering::Relaxed).saturating_add(added);
        if total > self.limit { Err(Exceeded) } else { Ok(()) }
    }
}

struct Ctx {
    min_count: u64,
    max_len: usize,
}

fn mine_tree(
    tree: &FpTree,
    suffix: &mut Vec<u32>,
    ctx: &Ctx,
    sink: &mut Sink,
    s: &mut Scratch,
) -> Result<(), Exceeded> {
    if tree.single_path {
        let items: Vec<u32> = tree.links[1..].iter().map(|nd| tree.global[nd.item as usize]).collect();
        return enumerate_path(&items, &tree.count[1..], suffix, ctx, sink);
    }
    for j in 0..tree.n_items() {
        suffix.push(tree.global[j]);
        sink.emit(suffix, tree.item_count[j])?;
        if suffix.len() < ctx.max_len
            && let Some(cond) = tree.conditional(j, ctx.min_count, s)
        {
            mine_tree(&cond, suffix, ctx, sink, s)?;
        }
        suffix.pop();
    }
    Ok(())
}

/// Every non-empty combination of a single path's nodes, appended to `suffix`: its count is that of its
/// deepest node (counts only decrease along a path).
fn enumerate_path(
    items: &[u32],
    counts: &[u32],
    suffix: &mut Vec<u32>,
    ctx: &Ctx,
    sink: &mut Sink,
) -> Result<(), Exceeded> {
    for t in 0..items.len() {
        suffix.push(items[t]);
        sink.emit(suffix, counts[t])?;
        if suffix.len() < ctx.max_len {
            enumerate_path(&items[t + 1..], &counts[t + 1..], suffix, ctx, sink)?;
        }
        suffix.pop();
    }
    Ok(())
}

/// Item id → dense slot, dense when ids are small (the usual case), hashed otherwise.
enum IdIndex {
    Dense(Vec<u32>),
    Sparse(HashMap<u32, u32>),
}

impl IdIndex {
    fn get(&self, id: u32) -> Option<u32> {
        match self {
            IdIndex::Dense(v) => v.get(id as usize).copied().filter(|&r| r != NIL),
            IdIndex::Sparse(m) => m.get(&id).copied(),
        }
    }
}

/// Sorts `seg` and moves its distinct values to the front; returns how many there are.
pub(super) fn sort_dedup(seg: &mut [u32]) -> usize {
    seg.sort_unstable();
    let mut kept = 0;
    for i in 0..seg.len() {
        if i == 0 || seg[i] != seg[kept - 1] {
            seg[kept] = seg[i];
            kept += 1;
        }
    }
    kept
}

/// Whether ids up to `max_id` are few enough, next to the input size, to index an array by (at most a few
/// hundred MB for absurdly large inputs; hashed otherwise).
fn dense_ids(max_id: usize, total: usize) -> bool {
    max_id <= (2 * total).min(1 << 26) + (1 << 16)
}

/// Counts, per distinct id, the baskets that contain it (duplicates inside a basket count once).
fn count_items<B: Baskets>(transactions: &B, total: usize) -> Vec<(u32, u64)> {
    let max_id = (0..transactions.count()).flat_map(|t| transactions.basket(t)).copied().max().unwrap_or(0) as usize;
    if dense_ids(max_id, total) {
        let mut counts = vec![0u64; max_id + 1];
        let mut last_seen = vec![NIL; max_id + 1];
        for t in 0..transactions.count() {
            for &id in transactions.basket(t) {
                let i = id as usize;
                if last_seen[i] != t as u32 {
                    last_seen[i] = t as u32;
                    counts[i] += 1;
                }
            }
        }
        counts.iter().enumerate().filter(|&(_, &c)| c > 0).map(|(id, &c)| (id as u32, c)).collect()
    } else {
        let mut counts: HashMap<u32, (u64, u32)> = HashMap::new();
        for t in 0..transactions.count() {
            for &id in transactions.basket(t) {
                let e = counts.entry(id).or_insert((0, NIL));
                if e.1 != t as u32 {
                    e.1 = t as u32;
                    e.0 += 1;
                }
            }
        }
        counts.into_iter().map(|(id, (c, _))| (id, c)).collect()
    }
}

/// Every itemset of at most `max_len` items contained in at least `min_count` of `transactions`, ordered by
/// size and then by ids. `min_count` must be ≥ 1.
pub(super) fn frequent_itemsets<B: Baskets>(
    transactions: B,
    min_count: u64,
    max_len: usize,
    limit: usize,
) -> Result<Vec<FrequentItemset>, BasketError> {
    let n = transactions.count();
    let total: usize = (0..n).map(|t| transactions.basket(t).len()).sum();
    // Node and path indices are u32 (half the memory traffic of usize); so are basket indices above.
    if total >= NIL as usize || n >= NIL as usize {
        return Err(BasketError::InputTooLarge);
    }
    let mut frequent: Vec<(u32, u64)> =
        count_items(&transactions, total).into_iter().filter(|&(_, c)| c >= min_count).collect();
    frequent.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let rank_to_id: Vec<u32> = frequent.iter().map(|&(id, _)| id).collect();
    let max_frequent = rank_to_id.iter().copied().max().unwrap_or(0) as usize;
    let index = if dense_ids(max_frequent, total) {
        let mut v = vec![NIL; max_frequent + 1];
        for (r, &id) in rank_to_id.iter().enumerate() {
            v[id as usize] = r as u32;
        }
        IdIndex::Dense(v)
    } else {
        IdIndex::Sparse(rank_to_id.iter().enumerate().map(|(r, &id)| (id, r as u32)).collect())
    };

    // Each basket as its ascending, de-duplicated frequent ranks.
    let (buf, paths) = transactions.into_ranked(|id| index.get(id));
    drop(index);
    let first = FirstLevel::new(buf, paths, rank_to_id.len());

    let ctx = Ctx { min_count, max_len };
    let emitted = AtomicUsize::new(0);
    let mined: Result<Vec<Sink>, Exceeded> = (0..rank_to_id.len())
        .into_par_iter()
        .map_init(Scratch::default, |s, j| {
            let mut sink = Sink::new(&emitted, limit);
            let mut suffix = vec![j as u32];
            sink.emit(&suffix, first.item_count[j])?;
            if max_len > 1
                && let Some(cond) = first.conditional(j, min_count, s)
            {
                mine_tree(&cond, &mut suffix, &ctx, &mut sink, s)?;
            }
            sink.flush()?;
            Ok(sink)
        })
        .collect();
    let sinks = mined.map_err(|Exceeded| BasketError::TooManyItemsets { limit })?;

    let nf = n as f64;
    let mut out = Vec::with_capacity(emitted.load(Ordering::Relaxed));
    for sink in &sinks {
        let mut start = 0;
        for (&end, &count) in sink.ends.iter().zip(&sink.counts) {
            let mut items: Vec<u32> = sink.items[start..end].iter().map(|&r| rank_to_id[r as usize]).collect();
            items.sort_unstable();
            out.push(FrequentItemset { items, count: u64::from(count), support: f64::from(count) / nf });
            start = end;
        }
    }
    out.par_sort_unstable_by(|a, b| a.items.len().cmp(&b.items.len()).then_with(|| a.items.cmp(&b.items)));
    Ok(out)
}
