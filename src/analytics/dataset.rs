//! What one analysis run reads, grouped by member: the store's aggregated rows (already grouped by member
//! and day in SQL) laid out as one flat vector per kind with per-member ranges, so a million members cost a
//! handful of allocations, and every kernel can take a member's slice without copying.

use std::collections::HashMap;
use std::ops::Range;

use chrono::{DateTime, NaiveDate, Utc};

use crate::members::MemberId;
use crate::store::{
    ByMember, EngagementDay, EventRow, EventTally, LineFact, LineFacts, MemberBase, PointsDay, PurchaseDay, RefundDay,
    SkuFacts,
};

/// Rows of one kind grouped by member: `rows[ranges[i]]` belong to `members[i]` of the dataset.
#[derive(Debug, Clone)]
pub struct Grouped<T> {
    rows: Vec<T>,
    ranges: Vec<Range<usize>>,
}

impl<T> Default for Grouped<T> {
    /// No rows: what a run leaves of a kind once its last reader is done.
    fn default() -> Self {
        Self { rows: Vec::new(), ranges: Vec::new() }
    }
}

impl<T> Grouped<T> {
    /// Group `rows` (any order) by the dataset's member index; rows of unknown members are dropped (they
    /// belong to members merged or registered after the cut-off). Keeps each member's rows in input order.
    fn new(mut rows: Vec<T>, index: &HashMap<MemberId, usize>, member_of: impl Fn(&T) -> MemberId) -> Self {
        let n = index.len();
        let pos = |r: &T| index.get(&member_of(r)).copied();
        rows.retain(|r| pos(r).is_some());
        // The store hands rows over grouped by member, in the members' order: then nothing moves. Otherwise a
        // stable sort by member position keeps the store's per-member order (by day, by time); each row's
        // position is looked up once, not once per comparison (tens of millions of rows at scale).
        let in_order = rows.windows(2).all(|w| member_of(&w[0]) == member_of(&w[1]) || pos(&w[0]) < pos(&w[1]));
        if !in_order {
            rows.sort_by_cached_key(|r| pos(r));
        }
        // The rows are kept for the whole run: give back what collecting them over-allocated (a vector grown
        // row by row has up to twice the room it needs; tens of millions of rows at scale).
        rows.shrink_to_fit();
        let mut ranges = vec![0..0; n];
        let mut start = 0;
        while start < rows.len() {
            let member = member_of(&rows[start]);
            let mut end = start + 1;
            while end < rows.len() && member_of(&rows[end]) == member {
                end += 1;
            }
            if let Some(p) = pos(&rows[start]) {
                ranges[p] = start..end;
            }
            start = end;
        }
        Self { rows, ranges }
    }

    /// Group rows a store handed over in runs by member ([`ByMember`]): the member is not kept per row. Runs
    /// in the members' order (what the stores give) are taken as they are; otherwise runs are gathered by
    /// member position, a member's runs in input order. Runs of unknown members are dropped.
    fn from_runs(rows: ByMember<T>, index: &HashMap<MemberId, usize>) -> Self
    where
        T: Clone,
    {
        let (runs, rows) = rows.into_parts();
        // (member position, first row, rows) of every known member's run.
        let mut placed: Vec<(usize, usize, usize)> = Vec::with_capacity(runs.len());
        let mut start = 0usize;
        for (member, n) in runs {
            let n = n as usize;
            if let Some(&p) = index.get(&member) {
                placed.push((p, start, n));
            }
            start += n;
        }
        let mut ranges = vec![0..0; index.len()];
        // Every row kept, each member in one run, runs in member order.
        let in_place = placed.iter().map(|&(_, _, n)| n).sum::<usize>() == rows.len()
            && placed.windows(2).all(|w| w[0].0 < w[1].0);
        if in_place {
            for (p, first, n) in placed {
                ranges[p] = first..first + n;
            }
            return Self { rows, ranges };
        }
        placed.sort_by_key(|&(p, first, _)| (p, first));
        let mut out: Vec<T> = Vec::with_capacity(placed.iter().map(|&(_, _, n)| n).sum());
        for (p, first, n) in placed {
            let at = out.len();
            out.extend_from_slice(&rows[first..first + n]);
            ranges[p] = if ranges[p].is_empty() { at..out.len() } else { ranges[p].start..out.len() };
        }
        Self { rows: out, ranges }
    }

    /// The rows of the member at position `i`.
    pub fn of(&self, i: usize) -> &[T] {
        self.ranges.get(i).map(|r| &self.rows[r.clone()]).unwrap_or(&[])
    }

    /// Every row, grouped by member.
    pub fn all(&self) -> &[T] {
        &self.rows
    }

    /// Bytes the rows and ranges take in place (not counting what rows point to).
    fn footprint(&self) -> usize {
        self.rows.capacity() * std::mem::size_of::<T>() + self.ranges.capacity() * std::mem::size_of::<Range<usize>>()
    }
}

/// Everything a run computes from, cut at the end of `as_of` (UTC): nothing later is read.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub as_of: NaiveDate,
    /// Active members registered by the cut-off, by id.
    pub members: Vec<MemberBase>,
    pub index: HashMap<MemberId, usize>,
    pub purchases: Grouped<PurchaseDay>,
    pub refunds: Grouped<RefundDay>,
    pub events: Grouped<EventTally>,
    pub lines: Grouped<LineFact>,
    /// The SKUs order lines name, by [`LineFact::sku`].
    pub skus: Vec<SkuFacts>,
    pub points: Grouped<PointsDay>,
    pub engagement: Grouped<EngagementDay>,
    /// Event streams for funnels and paths (a recent window only; see the parameters).
    pub streams: Grouped<EventRow>,
    /// Distinct active members per day over the KPI window.
    pub active_by_day: Vec<(NaiveDate, i64)>,
    /// Reviews and notes (member, time, text) for keyword tags.
    pub texts: Vec<(MemberId, DateTime<Utc>, String)>,
}

/// The raw rows a store hands over, before grouping.
#[derive(Debug, Clone, Default)]
pub struct RawRows {
    pub members: Vec<MemberBase>,
    pub purchases: ByMember<PurchaseDay>,
    pub refunds: Vec<RefundDay>,
    pub events: Vec<EventTally>,
    pub lines: LineFacts,
    pub points: ByMember<PointsDay>,
    pub engagement: Vec<EngagementDay>,
    pub streams: Vec<EventRow>,
    pub active_by_day: Vec<(NaiveDate, i64)>,
    pub texts: Vec<(MemberId, DateTime<Utc>, String)>,
}

impl Dataset {
    /// Group the store's rows by member.
    pub fn new(as_of: NaiveDate, raw: RawRows) -> Self {
        let index: HashMap<MemberId, usize> = raw.members.iter().enumerate().map(|(i, m)| (m.member_id, i)).collect();
        let data = Self {
            as_of,
            purchases: Grouped::from_runs(raw.purchases, &index),
            refunds: Grouped::new(raw.refunds, &index, |r| r.member_id),
            events: Grouped::new(raw.events, &index, |r| r.member_id),
            lines: Grouped::from_runs(raw.lines.lines, &index),
            skus: raw.lines.skus,
            points: Grouped::from_runs(raw.points, &index),
            engagement: Grouped::new(raw.engagement, &index, |r| r.member_id),
            streams: Grouped::new(raw.streams, &index, |r| r.member_id),
            members: raw.members,
            index,
            active_by_day: raw.active_by_day,
            texts: raw.texts,
        };
        data.log_footprint();
        data
    }

    /// What each kind of row costs in memory: at a million members the grouped rows are most of a run's
    /// peak, and this says which kind to make smaller.
    fn log_footprint(&self) {
        let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
        for (kind, rows, bytes) in [
            ("purchases", self.purchases.all().len(), self.purchases.footprint()),
            ("refunds", self.refunds.all().len(), self.refunds.footprint()),
            ("event tallies", self.events.all().len(), self.events.footprint()),
            ("order lines", self.lines.all().len(), self.lines.footprint()),
            ("points", self.points.all().len(), self.points.footprint()),
            ("engagement", self.engagement.all().len(), self.engagement.footprint()),
            ("event streams", self.streams.all().len(), self.streams.footprint()),
        ] {
            tracing::debug!(kind, rows, mib = mib(bytes), "grouped rows");
        }
    }

    /// The first instant after the data a run may read: midnight UTC after `as_of`.
    pub fn cut_off(as_of: NaiveDate) -> DateTime<Utc> {
        let next = as_of.succ_opt().unwrap_or(as_of);
        next.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_default()
    }

    /// The SKU an order line names (an empty SKU should a store hand over a position it did not list).
    pub fn sku(&self, line: &LineFact) -> &SkuFacts {
        static UNKNOWN: SkuFacts = SkuFacts { sku: String::new(), category: None, brand: None };
        self.skus.get(line.sku as usize).unwrap_or(&UNKNOWN)
    }

    /// Members' last activity day (their latest event), by position.
    pub fn last_event_day(&self, i: usize) -> Option<NaiveDate> {
        self.events.of(i).iter().map(|e| e.last_at.date_naive()).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn rows_are_grouped_by_member_and_unknown_members_dropped() {
        let at = Utc::now();
        let members =
            vec![MemberBase { member_id: 7, registered_at: at }, MemberBase { member_id: 3, registered_at: at }];
        let p = |member_id: MemberId, d: &str, amount| {
            (member_id, PurchaseDay { day: day(d), orders: 1, amount, promo_orders: 0 })
        };
        let raw = RawRows {
            members: members.clone(),
            purchases: [p(3, "2026-01-01", 10), p(9, "2026-01-01", 99), p(7, "2026-01-02", 20), p(3, "2026-01-05", 30)]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let d = Dataset::new(day("2026-02-01"), raw);
        assert_eq!(d.purchases.of(0).iter().map(|r| r.amount).collect::<Vec<_>>(), vec![20]);
        assert_eq!(d.purchases.of(1).iter().map(|r| r.amount).collect::<Vec<_>>(), vec![10, 30]);
        assert_eq!(d.purchases.all().len(), 3);
        // In the members' order, as the stores hand them over: kept in place.
        let raw = RawRows {
            members,
            purchases: [p(7, "2026-01-02", 20), p(7, "2026-01-03", 21), p(3, "2026-01-01", 10)].into_iter().collect(),
            ..Default::default()
        };
        let d = Dataset::new(day("2026-02-01"), raw);
        assert_eq!(d.purchases.of(0).iter().map(|r| r.amount).collect::<Vec<_>>(), vec![20, 21]);
        assert_eq!(d.purchases.of(1).iter().map(|r| r.amount).collect::<Vec<_>>(), vec![10]);
        assert_eq!(d.purchases.all().iter().map(|r| r.amount).collect::<Vec<_>>(), vec![20, 21, 10]);
        assert!(d.points.of(1).is_empty());
        assert!(d.refunds.of(0).is_empty());
        assert_eq!(Dataset::cut_off(day("2026-02-01")).to_rfc3339(), "2026-02-02T00:00:00+00:00");
    }
}
