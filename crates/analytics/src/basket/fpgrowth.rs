//! FP-growth (Han, Pei & Yin 2000) over `u32` item ids.
//!
//! Written here because no maintained crate provides it (see the module doc of [`super`]). Layout:
//! - items are ranked by descending count (ties by ascending id) and each basket becomes its sorted,
//!   de-duplicated list of frequent ranks;
//! - an FP-tree is a set of parallel arena vectors (item, parent, count per node; node 0 is the root) with a
//!   header table in CSR form (the nodes of each item). It is built without any child lookup: the paths
//!   are sorted lexicographically, so a path shares with the tree exactly its longest common prefix with
//!   the path before it, and only the remainder becomes new nodes;
//! - the conditional tree of an item is built the same way from its prefix paths (weighted by the item's
//!   node counts) after dropping the items that are infrequent in them. Items keep their global order, so
//!   a conditional tree only ever holds items ranked before the item it is conditioned on;
//! - a tree that is a single path is not recursed into: every combination of its nodes is frequent, with
//!   the count of its deepest node;
//! - the conditional trees of the top-level items are mined in parallel (rayon), each into its own buffer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::{BasketError, FrequentItemset};

const NIL: u32 = u32::MAX;

/// An FP-tree in arena form. Items are local indices `0..global.len()`, in the global rank order.
struct FpTree {
    item: Vec<u32>,
    parent: Vec<u32>,
    count: Vec<u64>,
    header_start: Vec<u32>,
    header_nodes: Vec<u32>,
    item_count: Vec<u64>,
    /// Local item index → global rank.
    global: Vec<u32>,
    /// Every node's only child is the node created after it.
    single_path: bool,
}

/// A weighted path `buf[start..end]` of local item indices, ascending.
type Path = (u32, u32, u64);

impl FpTree {
    /// Builds the tree of the weighted `paths` (slices of `buf`); `global` names the local items.
    fn from_paths(buf: &[u32], paths: &mut [Path], global: Vec<u32>) -> FpTree {
        let slice = |p: &Path| &buf[p.0 as usize..p.1 as usize];
        // Stable sort: prefix paths arrive nearly sorted (pre-order of the parent tree), which it exploits.
        paths.sort_by(|a, b| slice(a).cmp(slice(b)));
        let k = global.len();
        let cap = buf.len() + 1;
        let mut item = Vec::with_capacity(cap);
        let mut parent = Vec::with_capacity(cap);
        let mut count = Vec::with_capacity(cap);
        item.push(NIL);
        parent.push(0);
        count.push(0);
        let mut item_count = vec![0u64; k];
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
            for &it in &path[lcp..] {
                let par = stack.last().copied().unwrap_or(0);
                let id = item.len() as u32;
                single_path &= par + 1 == id;
                item.push(it);
                parent.push(par);
                count.push(w);
                stack.push(id);
            }
            for &it in path {
                item_count[it as usize] += w;
            }
            prev = path;
        }
        // Header table: the nodes of each item, in creation order.
        let mut header_start = vec![0u32; k + 1];
        for &it in &item[1..] {
            header_start[it as usize + 1] += 1;
        }
        for i in 0..k {
            header_start[i + 1] += header_start[i];
        }
        let mut fill = header_start.clone();
        let mut header_nodes = vec![0u32; item.len() - 1];
        for (nd, &it) in item.iter().enumerate().skip(1) {
            let slot = &mut fill[it as usize];
            header_nodes[*slot as usize] = nd as u32;
            *slot += 1;
        }
        FpTree { item, parent, count, header_start, header_nodes, item_count, global, single_path }
    }

    fn n_items(&self) -> usize {
        self.global.len()
    }

    /// The conditional tree of local item `j`: its prefix paths, restricted to the items frequent in them.
    fn conditional(&self, j: usize, min_count: u64, s: &mut Scratch) -> Option<FpTree> {
        let nodes = &self.header_nodes[self.header_start[j] as usize..self.header_start[j + 1] as usize];
        // Ancestors of an item-j node carry items ranked before j only.
        s.cnt.clear();
        s.cnt.resize(j, 0);
        for &nd in nodes {
            let w = self.count[nd as usize];
            let mut p = self.parent[nd as usize];
            while p != 0 {
                s.cnt[self.item[p as usize] as usize] += w;
                p = self.parent[p as usize];
            }
        }
        s.map.clear();
        s.map.resize(j, NIL);
        let mut global = Vec::new();
        for i in 0..j {
            if s.cnt[i] >= min_count {
                s.map[i] = global.len() as u32;
                global.push(self.global[i]);
            }
        }
        if global.is_empty() {
            return None;
        }
        s.buf.clear();
        s.paths.clear();
        for &nd in nodes {
            let start = s.buf.len();
            let mut p = self.parent[nd as usize];
            while p != 0 {
                let m = s.map[self.item[p as usize] as usize];
                if m != NIL {
                    s.buf.push(m);
                }
                p = self.parent[p as usize];
            }
            if s.buf.len() > start {
                s.buf[start..].reverse();
                s.paths.push((start as u32, s.buf.len() as u32, self.count[nd as usize]));
            }
        }
        Some(FpTree::from_paths(&s.buf, &mut s.paths, global))
    }
}

/// Reusable buffers for building conditional trees (one set per worker thread).
#[derive(Default)]
struct Scratch {
    cnt: Vec<u64>,
    map: Vec<u32>,
    buf: Vec<u32>,
    paths: Vec<Path>,
}

/// Mining stopped because too many itemsets are frequent.
struct Exceeded;

/// Collects itemsets (as global ranks) in flat buffers and keeps the shared total under the limit.
struct Sink<'a> {
    items: Vec<u32>,
    ends: Vec<usize>,
    counts: Vec<u64>,
    pending: usize,
    total: &'a AtomicUsize,
    limit: usize,
}

impl<'a> Sink<'a> {
    fn new(total: &'a AtomicUsize, limit: usize) -> Self {
        Sink { items: Vec::new(), ends: Vec::new(), counts: Vec::new(), pending: 0, total, limit }
    }

    fn emit(&mut self, itemset: &[u32], count: u64) -> Result<(), Exceeded> {
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

fn mine_tree(tree: &FpTree, suffix: &mut Vec<u32>, ctx: &Ctx, sink: &mut Sink, s: &mut Scratch) -> Result<(), Exceeded> {
    if tree.single_path {
        let items: Vec<u32> = tree.item[1..].iter().map(|&it| tree.global[it as usize]).collect();
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
fn enumerate_path(items: &[u32], counts: &[u64], suffix: &mut Vec<u32>, ctx: &Ctx, sink: &mut Sink) -> Result<(), Exceeded> {
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

/// Counts, per distinct id, the baskets that contain it (duplicates inside a basket count once).
fn count_items(transactions: &[Vec<u32>], total: usize) -> Vec<(u32, u64)> {
    let max_id = transactions.iter().flatten().copied().max().unwrap_or(0) as usize;
    if max_id <= 4 * total + (1 << 16) {
        let mut counts = vec![0u64; max_id + 1];
        let mut last_seen = vec![NIL; max_id + 1];
        for (t, tx) in transactions.iter().enumerate() {
            for &id in tx {
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
        for (t, tx) in transactions.iter().enumerate() {
            for &id in tx {
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
pub(super) fn frequent_itemsets(
    transactions: &[Vec<u32>],
    min_count: u64,
    max_len: usize,
    limit: usize,
) -> Result<Vec<FrequentItemset>, BasketError> {
    let n = transactions.len();
    let total: usize = transactions.iter().map(Vec::len).sum();
    // Node and path indices are u32 (half the memory traffic of usize); so are basket indices above.
    if total >= NIL as usize || n >= NIL as usize {
        return Err(BasketError::InputTooLarge);
    }
    let mut frequent: Vec<(u32, u64)> = count_items(transactions, total).into_iter().filter(|&(_, c)| c >= min_count).collect();
    frequent.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let rank_to_id: Vec<u32> = frequent.iter().map(|&(id, _)| id).collect();
    let max_frequent = rank_to_id.iter().copied().max().unwrap_or(0) as usize;
    let index = if max_frequent <= 4 * total + (1 << 16) {
        let mut v = vec![NIL; max_frequent + 1];
        for (r, &id) in rank_to_id.iter().enumerate() {
            v[id as usize] = r as u32;
        }
        IdIndex::Dense(v)
    } else {
        IdIndex::Sparse(rank_to_id.iter().enumerate().map(|(r, &id)| (id, r as u32)).collect())
    };

    // Each basket as its ascending, de-duplicated frequent ranks.
    let mut buf: Vec<u32> = Vec::with_capacity(total);
    let mut paths: Vec<Path> = Vec::with_capacity(n);
    for tx in transactions {
        let start = buf.len();
        buf.extend(tx.iter().filter_map(|&id| index.get(id)));
        let seg = &mut buf[start..];
        seg.sort_unstable();
        let mut kept = 0;
        for i in 0..seg.len() {
            if i == 0 || seg[i] != seg[kept - 1] {
                seg[kept] = seg[i];
                kept += 1;
            }
        }
        buf.truncate(start + kept);
        if kept > 0 {
            paths.push((start as u32, buf.len() as u32, 1));
        }
    }
    let global: Vec<u32> = (0..rank_to_id.len() as u32).collect();
    let tree = FpTree::from_paths(&buf, &mut paths, global);
    drop(buf);

    let ctx = Ctx { min_count, max_len };
    let emitted = AtomicUsize::new(0);
    let mined: Result<Vec<Sink>, Exceeded> = (0..tree.n_items())
        .into_par_iter()
        .map_init(Scratch::default, |s, j| {
            let mut sink = Sink::new(&emitted, limit);
            let mut suffix = vec![tree.global[j]];
            sink.emit(&suffix, tree.item_count[j])?;
            if max_len > 1
                && let Some(cond) = tree.conditional(j, min_count, s)
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
            out.push(FrequentItemset { items, count, support: count as f64 / nf });
            start = end;
        }
    }
    out.par_sort_unstable_by(|a, b| a.items.len().cmp(&b.items.len()).then_with(|| a.items.cmp(&b.items)));
    Ok(out)
}
