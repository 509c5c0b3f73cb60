//! The run: each stage maps the dataset to one kernel's inputs, calls it, and files the results per member
//! (the profile's body) and as an aggregate (what `/v1/analytics/{model}` serves).

use std::collections::{BTreeMap, HashMap};

use chrono::{Days, NaiveDate};
use serde_json::{Value, json};

use super::bodies::Bodies;
use super::kernels::{
    basket, churn, clusters, clv, cohorts, cycle, funnels, kpis, lifecycle, preferences, rfm, tags as tagk,
};
use super::{AnalyticsError, AnalyticsParams, Dataset, Grouped};
use crate::members::MemberId;
use crate::store::{AnalyticsChange, AnalyticsOutput, AnalyticsRun, MemberAnalyticsRow, MemberTagRow, PreviousMember};

/// One member's results as the stages fill them in (the profile body's sections go to `Run::bodies`).
#[derive(Debug, Default)]
struct Acc {
    /// The purchase cycle says the next purchase is due (a model tag).
    cycle_due: bool,
    rfm_segment: Option<rfm::RfmSegment>,
    stage: Option<lifecycle::LifecycleStage>,
    clv_fen: Option<i64>,
    prob_alive: Option<f64>,
    churn_risk: Option<f64>,
    cluster: Option<i32>,
    next_purchase: Option<NaiveDate>,
}

/// What the pipeline carries from stage to stage.
struct Run<'a> {
    run_id: i64,
    as_of: NaiveDate,
    params: &'a AnalyticsParams,
    members: Vec<Acc>,
    /// The members' profile bodies, section by section, kept on disk until the store writes them.
    bodies: Bodies,
    results: Vec<(String, Value)>,
    summary: serde_json::Map<String, Value>,
    changes: Vec<AnalyticsChange>,
    /// The previous run's stage and RFM result by member id (emptied once the lifecycle stage is done).
    previous: HashMap<MemberId, (Option<lifecycle::LifecycleStage>, Option<rfm::RfmMember>)>,
    previous_run: Option<&'a AnalyticsRun>,
    notices: Vec<crate::notify::Notice>,
    dropped_manual_tags: Vec<(MemberId, String)>,
    /// Members who stalled in a funnel: (member index, tag, reason), tagged by the tags stage.
    stalled: Vec<(usize, String, String)>,
}

/// Run every model over `data` and assemble what the store commits. `previous` is the last finished run
/// with its member rows (for change logs and transition matrices), taken by value so each row's text is freed
/// once parsed (a million at scale); `tags` reads the tags stored now when the tags stage starts (millions of
/// rows at scale, not held through the stages before it), which turns them into the kernel's form without a
/// second copy.
pub fn run(
    run_id: i64,
    mut data: Dataset,
    previous: Option<(&AnalyticsRun, Vec<PreviousMember>)>,
    tags: impl FnOnce() -> Result<Vec<MemberTagRow>, AnalyticsError>,
    params: &AnalyticsParams,
    progress: impl Fn(&str),
) -> Result<AnalyticsOutput, AnalyticsError> {
    let mut r = Run {
        run_id,
        as_of: data.as_of,
        params,
        members: (0..data.members.len()).map(|_| Acc::default()).collect(),
        bodies: Bodies::default(),
        results: Vec::new(),
        summary: serde_json::Map::new(),
        changes: Vec::new(),
        previous_run: previous.as_ref().map(|&(run, _)| run),
        previous: previous
            .map(|(_, rows)| {
                rows.into_iter()
                    .map(|row| {
                        let rfm = row.rfm.and_then(|v| serde_json::from_str::<rfm::RfmMember>(v.get()).ok());
                        (row.member_id, (stage_of(&row.stage), rfm))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        notices: Vec::new(),
        dropped_manual_tags: Vec::new(),
        stalled: Vec::new(),
    };
    // Each kind of row is freed after the last stage that reads it: the tags stage, last, holds the new tag
    // set (millions of rows at scale) and the stored one beside the rows it still needs.
    progress("rfm");
    r.rfm(&data)?;
    progress("lifecycle");
    r.lifecycle(&data)?;
    // The previous run's states serve only the two stages above: at a million members they are a couple of
    // hundred megabytes that would otherwise meet every later stage's peak.
    r.previous = HashMap::new();
    progress("clv");
    r.clv(&data)?;
    progress("churn");
    r.churn(&data)?;
    data.engagement = Grouped::default();
    data.refunds = Grouped::default();
    progress("purchase cycle");
    r.cycles(&data)?;
    progress("preferences");
    r.preferences(&data)?;
    progress("clusters");
    r.clusters(&data)?;
    progress("basket rules");
    r.basket(&data);
    data.lines = Grouped::default();
    data.skus = Vec::new();
    progress("cohorts");
    r.cohorts(&data);
    progress("funnels and paths");
    r.journeys(&data)?;
    data.streams = Grouped::default();
    progress("kpis");
    r.kpis(&data)?;
    data.points = Grouped::default();
    progress("tags");
    let tags = r.tags(&data, tags()?)?;
    let mut out = r.finish(&data)?;
    out.tags = tags;
    Ok(out)
}

impl Run<'_> {
    fn as_of(&self) -> NaiveDate {
        self.as_of
    }

    /// First day of a window of `days` days ending at `as_of` (both counted).
    fn window_start(&self, days: u32) -> NaiveDate {
        self.as_of().checked_sub_days(Days::new(u64::from(days.max(1)) - 1)).unwrap_or(NaiveDate::MIN)
    }

    fn put(&mut self, i: usize, key: &'static str, v: &impl serde::Serialize) -> Result<(), AnalyticsError> {
        self.put_text(i, key, &serde_json::to_string(v)?)
    }

    /// File a section that is JSON text already.
    fn put_text(&mut self, i: usize, key: &'static str, section: &str) -> Result<(), AnalyticsError> {
        self.bodies.put(i, key, section)
    }

    fn result(&mut self, model: &str, v: Value) {
        self.results.push((model.to_string(), v));
    }

    fn rfm(&mut self, d: &Dataset) -> Result<(), AnalyticsError> {
        let start = self.window_start(self.params.rfm.window_days);
        let inputs: Vec<rfm::RfmInput> = d
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let days = d.purchases.of(i);
                let in_window = days.iter().filter(|p| p.day >= start);
                let refunded: i64 = d.refunds.of(i).iter().filter(|r| r.day >= start).map(|r| r.amount).sum();
                rfm::RfmInput {
                    member_id: m.member_id,
                    last_purchase: days.last().map(|p| p.day),
                    orders: in_window.clone().fold(0u32, |n, p| n.saturating_add(p.orders)),
                    monetary_fen: in_window.map(|p| p.amount).sum::<i64>() - refunded,
                }
            })
            .collect();
        let report = rfm::rfm(&inputs, self.as_of(), &self.params.rfm);
        for (i, m) in report.members.iter().enumerate() {
            self.members[i].rfm_segment = m.segment;
            if let (Some(after), Some((_, Some(before)))) = (m.segment, self.previous.get(&m.member_id))
                && before.segment != Some(after)
            {
                let change = rfm::explain_segment_change(before, m, &report.summary);
                self.changes.push(AnalyticsChange {
                    run_id: self.run_id,
                    member_id: m.member_id,
                    model: "rfm".into(),
                    from: before.segment.map(|s| s.code().to_string()),
                    to: after.code().to_string(),
                    reason: change.text,
                });
            }
            self.put(i, "rfm", m)?;
        }
        let segments: BTreeMap<&str, u64> = report.summary.segments.iter().map(|s| (s.code, s.count)).collect();
        self.summary.insert(
            "rfm".into(),
            json!({"scored": report.summary.scored, "unscored": report.summary.unscored, "segments": segments}),
        );
        self.result("rfm", serde_json::to_value(&report.summary)?);
        Ok(())
    }

    fn lifecycle(&mut self, d: &Dataset) -> Result<(), AnalyticsError> {
        let inputs: Vec<lifecycle::LifecycleInput> = d
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let days = d.purchases.of(i);
                let last_purchase = days.last().map(|p| p.day);
                lifecycle::LifecycleInput {
                    member_id: m.member_id,
                    registered: m.registered_at.date_naive(),
                    first_purchase: days.first().map(|p| p.day),
                    last_purchase,
                    last_activity: d.last_event_day(i).max(last_purchase),
                }
            })
            .collect();
        let results = lifecycle::classify(&inputs, self.as_of(), &self.params.lifecycle)
            .map_err(|e| AnalyticsError::model("lifecycle", e))?;
        let mut now: Vec<(i64, lifecycle::LifecycleStage)> = Vec::with_capacity(results.len());
        let mut before: Vec<(i64, lifecycle::LifecycleStage)> = Vec::new();
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for (i, res) in results.iter().enumerate() {
            let Some(stage) = res.stage else { continue };
            now.push((res.member_id, stage));
            *counts.entry(stage.code()).or_default() += 1;
            self.members[i].stage = Some(stage);
            if let Some(&(Some(was), _)) = self.previous.get(&res.member_id) {
                before.push((res.member_id, was));
                if was != stage {
                    self.changes.push(AnalyticsChange {
                        run_id: self.run_id,
                        member_id: res.member_id,
                        model: "lifecycle".into(),
                        from: Some(was.code().to_string()),
                        to: stage.code().to_string(),
                        reason: format!("{} → {}: {}", was.name_zh(), stage.name_zh(), res.reason),
                    });
                }
            }
            self.put(i, "lifecycle", res)?;
        }
        let transitions = match self.previous_run {
            Some(prev) => {
                let t = lifecycle::transitions(&before, &now).map_err(|e| AnalyticsError::model("lifecycle", e))?;
                Some(json!({
                    "from_run": prev.run_id,
                    "from_as_of": prev.as_of,
                    "stages": t.stages.iter().map(|s| s.code()).collect::<Vec<_>>(),
                    "counts": t.counts,
                    "changed": t.changed,
                    "in_both": t.in_both,
                }))
            }
            None => None,
        };
        let names: Vec<Value> = lifecycle::LifecycleStage::ALL
            .iter()
            .map(|s| json!({"code": s.code(), "name_zh": s.name_zh(), "name_en": s.name_en()}))
            .collect();
        self.summary.insert("lifecycle".into(), json!(counts));
        self.result(
            "lifecycle",
            json!({"stages": names, "counts": counts, "params": self.params.lifecycle, "transitions": transitions}),
        );
        Ok(())
    }

    /// BG/NBD and Gamma-Gamma fitted on the shop's own repeat purchases, then every buyer scored. A shop
    /// too young to fit (no repeat buyers yet) gets the reason instead of a model, and the run goes on.
    fn clv(&mut self, d: &Dataset) -> Result<(), AnalyticsError> {
        let p = &self.params.clv;
        let summaries: Vec<(usize, clv::RepeatSummary)> = (0..d.members.len())
            .filter_map(|i| {
                let purchases: Vec<clv::Purchase> =
                    d.purchases.of(i).iter().map(|p| clv::Purchase { day: p.day, amount_fen: p.amount }).collect();
                clv::summarize(&purchases, self.as_of()).map(|s| (i, s))
            })
            .collect();
        let only: Vec<clv::RepeatSummary> = summaries.iter().map(|(_, s)| *s).collect();
        let bg = match clv::fit_bgnbd(&only, p) {
            Ok(fit) => fit,
            Err(e) => {
                let why = e.to_string();
                self.summary.insert("clv".into(), json!({"fitted": false, "reason": why}));
                self.result("clv_model", json!({"fitted": false, "reason": why, "customers": only.len()}));
                self.result("clv", json!({"fitted": false, "reason": why}));
                return Ok(());
            }
        };
        let gg = clv::fit_gamma_gamma(&only, p);
        let gg_params = gg.as_ref().ok().map(|f| f.params);
        let mut values: Vec<i64> = Vec::with_capacity(summaries.len());
        let mut stages: BTreeMap<String, u64> = BTreeMap::new();
        let mut failed = 0u64;
        let score = |k: usize| -> Result<Option<(clv::MemberClv, String)>, AnalyticsError> {
            let s = &summaries[k].1;
            match clv::score(&bg.params, gg_params.as_ref(), s, p) {
                Ok(m) => {
                    let text = serde_json::to_string(&json!({"summary": s, "score": m}))?;
                    Ok(Some((m, text)))
                }
                Err(_) => Ok(None),
            }
        };
        in_parallel(summaries.len(), score, |k, scored| {
            let i = summaries[k].0;
            match scored? {
                Some((m, text)) => {
                    values.push(m.clv_fen);
                    let stage = serde_json::to_value(m.stage).ok().and_then(|v| v.as_str().map(str::to_string));
                    *stages.entry(stage.unwrap_or_default()).or_default() += 1;
                    self.members[i].clv_fen = Some(m.clv_fen);
                    self.members[i].prob_alive = Some(m.prob_alive);
                    self.put_text(i, "clv", &text)?;
                }
                None => failed += 1,
            }
            Ok(())
        })?;
        values.sort_unstable();
        let total: i64 = values.iter().sum();
        let pct = |q: f64| values.get(((values.len() as f64 - 1.0) * q).round() as usize).copied();
        let gg_json = match &gg {
            Ok(f) => serde_json::to_value(f).unwrap_or(Value::Null),
            Err(e) => json!({"fitted": false, "reason": e.to_string()}),
        };
        self.summary.insert(
            "clv".into(),
            json!({"fitted": true, "bgnbd": bg.params, "log_likelihood": bg.log_likelihood, "converged": bg.converged,
                   "gamma_gamma": gg_params, "members": values.len()}),
        );
        self.result(
            "clv_model",
            json!({"fitted": true, "bgnbd": bg, "gamma_gamma": gg_json, "params": p, "as_of": self.as_of()}),
        );
        self.result(
            "clv",
            json!({"members": values.len(), "unscored": failed, "total_clv_fen": total,
                   "median_clv_fen": pct(0.5), "p90_clv_fen": pct(0.9), "max_clv_fen": values.last(),
                   "probabilistic_stages": stages, "horizon_months": p.horizon_months}),
        );
        Ok(())
    }

    /// The churn model trained on the shop's own history and validated on a later, held-out period; every
    /// buyer scored with the top reasons. A shop too small to train gets the reason instead.
    fn churn(&mut self, d: &Dataset) -> Result<(), AnalyticsError> {
        use churn::ChurnHistories as _;
        let histories = MemberHistories(d);
        let model = match churn::train_and_evaluate_on(&histories, self.as_of(), &self.params.churn) {
            Ok(m) => m,
            Err(e) => {
                let why = e.to_string();
                self.summary.insert("churn".into(), json!({"trained": false, "reason": why}));
                self.result("churn", json!({"trained": false, "reason": why}));
                return Ok(());
            }
        };
        let mut scored = 0u64;
        let mut high = 0u64;
        let as_of = self.as_of();
        let score = |i: usize| -> Result<Option<(f64, String)>, AnalyticsError> {
            match model.score(&histories.history(i), as_of) {
                Ok(s) => Ok(Some((s.probability, serde_json::to_string(&s)?))),
                Err(_) => Ok(None),
            }
        };
        in_parallel(histories.len(), score, |i, result| {
            if let Some((probability, text)) = result? {
                scored += 1;
                high += u64::from(probability >= 0.5);
                self.members[i].churn_risk = Some(probability);
                self.put_text(i, "churn", &text)?;
            }
            Ok(())
        })?;
        let v = &model.validation;
        self.summary.insert(
            "churn".into(),
            json!({"trained": true, "roc_auc": v.roc_auc, "pr_auc": v.pr_auc, "scored": scored, "at_risk": high}),
        );
        self.result(
            "churn",
            json!({"trained": true, "model": serde_json::to_value(&model).unwrap_or(Value::Null), "scored": scored, "at_risk": high}),
        );
        Ok(())
    }

    /// k-means on standardized behaviour features of the window's buyers, each cluster described in words.
    fn clusters(&mut self, d: &Dataset) -> Result<(), AnalyticsError> {
        let start = self.window_start(self.params.rfm.window_days);
        let names = ["recency", "frequency", "monetary", "aov", "discount_share", "category_breadth", "engagement"];
        let mut ids = Vec::new();
        let mut rows: Vec<usize> = Vec::new();
        let mut values = Vec::new();
        for (i, m) in d.members.iter().enumerate() {
            let window: Vec<_> = d.purchases.of(i).iter().filter(|p| p.day >= start).collect();
            let orders: i64 = window.iter().map(|p| i64::from(p.orders)).sum();
            let Some(last) = window.last() else { continue };
            if orders == 0 {
                continue;
            }
            let money: i64 = window.iter().map(|p| p.amount).sum();
            let promo: i64 = window.iter().map(|p| i64::from(p.promo_orders)).sum();
            let mut cats: Vec<&str> =
                d.lines.of(i).iter().filter_map(|l| d.sku(l).category.as_deref()?.split('/').next()).collect();
            cats.sort_unstable();
            cats.dedup();
            ids.push(m.member_id);
            rows.push(i);
            values.extend([
                (self.as_of() - last.day).num_days() as f64,
                orders as f64,
                money as f64 / 100.0,
                money as f64 / 100.0 / orders as f64,
                promo as f64 / orders as f64,
                cats.len() as f64,
                d.events.of(i).iter().map(|e| e.recent).sum::<i64>() as f64,
            ]);
        }
        let input = clusters::ClusterInput {
            feature_names: names.iter().map(|s| s.to_string()).collect(),
            member_ids: ids,
            values,
        };
        match clusters::cluster(&input, &self.params.clusters) {
            Ok(res) => {
                let row_of: HashMap<MemberId, usize> =
                    input.member_ids.iter().copied().zip(rows.iter().copied()).collect();
                // Sections are filed in member order.
                let mut assigned: Vec<(usize, &clusters::ClusterAssignment)> =
                    res.assignments.iter().filter_map(|a| Some((*row_of.get(&a.member_id)?, a))).collect();
                assigned.sort_unstable_by_key(|&(pos, _)| pos);
                for (pos, a) in assigned {
                    let description = res.clusters.iter().find(|c| c.id == a.cluster).map(|c| c.description.clone());
                    self.members[pos].cluster = i32::try_from(a.cluster).ok();
                    self.put(
                        pos,
                        "cluster",
                        &json!({"id": a.cluster, "distance": a.distance, "description": description}),
                    )?;
                }
                let described: Vec<Value> = res
                    .clusters
                    .iter()
                    .map(|c| json!({"id": c.id, "size": c.size, "description": c.description}))
                    .collect();
                self.summary.insert("clusters".into(), json!({"k": res.k, "clusters": described}));
                let mut v = serde_json::to_value(&res).unwrap_or(Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.remove("assignments");
                }
                self.result("clusters", v);
            }
            Err(e) => {
                let why = e.to_string();
                self.summary.insert("clusters".into(), json!({"fitted": false, "reason": why}));
                self.result("clusters", json!({"fitted": false, "reason": why, "members": input.member_ids.len()}));
            }
        }
        Ok(())
    }

    /// FP-growth over the window's orders (SKU sets), rules with support, confidence and lift.
    fn basket(&mut self, d: &Dataset) {
        let sku = |l: &crate::store::LineFact| d.sku(l).sku.as_str();
        // Each order's SKUs are encoded as the order is assembled, into one buffer: held as text first, or
        // as a vector per order, the baskets of a year's orders cost several hundred megabytes more at scale.
        let orders = |i: usize| d.lines.of(i).chunk_by(|a, b| a.order_id == b.order_id);
        let encoded = basket::ItemDictionary::from_keys(d.lines.all().iter().map(sku)).map(|dict| {
            let count = (0..d.members.len()).map(|i| orders(i).count()).sum();
            let mut tx = basket::FlatBaskets::with_capacity(count, d.lines.all().len());
            for i in 0..d.members.len() {
                for o in orders(i) {
                    tx.push(o.iter().filter_map(|l| dict.id(sku(l))));
                }
            }
            (dict, tx)
        });
        let mined = encoded.and_then(|(dict, tx)| basket::mine_flat(tx, &self.params.basket).map(|r| (dict, r)));
        match mined {
            Ok((dict, res)) => {
                const SHOWN: usize = 500;
                let rules: Vec<Value> = res
                    .rules
                    .iter()
                    .take(SHOWN)
                    .map(|r| {
                        json!({"antecedent": dict.keys(&r.antecedent), "consequent": dict.keys(&r.consequent),
                               "support": r.support, "confidence": r.confidence, "lift": r.lift,
                               "leverage": r.leverage, "conviction": r.conviction, "count": r.count,
                               "text": dict.describe(r)})
                    })
                    .collect();
                self.summary.insert(
                    "basket_rules".into(),
                    json!({"orders": res.n_transactions, "itemsets": res.itemsets.len(), "rules": res.rules.len()}),
                );
                self.result(
                    "basket_rules",
                    json!({"orders": res.n_transactions, "min_count": res.min_count, "itemsets": res.itemsets.len(),
                           "rules_total": res.rules.len(), "rules": rules, "params": self.params.basket}),
                );
            }
            Err(e) => {
                let why = e.to_string();
                self.summary.insert("basket_rules".into(), json!({"mined": false, "reason": why}));
                self.result("basket_rules", json!({"mined": false, "reason": why}));
            }
        }
    }

    /// Each member's purchase cycle, overall and per top-level category. Inputs and results are made a chunk
    /// of members at a time: all of them at once hold a date per order line and a string per member and
    /// category (over a gigabyte at a million members).
    fn cycles(&mut self, d: &Dataset) -> Result<(), AnalyticsError> {
        use rayon::prelude::*;
        let (as_of, params) = (self.as_of(), &self.params.cycle);
        let input = |i: usize| {
            let mut by_category: BTreeMap<&str, Vec<NaiveDate>> = BTreeMap::new();
            for l in d.lines.of(i) {
                if let Some(c) =
                    d.sku(l).category.as_deref().and_then(|c| c.split('/').next()).filter(|c| !c.is_empty())
                {
                    by_category.entry(c).or_default().push(l.day);
                }
            }
            cycle::CycleInput {
                member_id: d.members[i].member_id,
                purchase_days: d.purchases.of(i).iter().map(|p| p.day).collect(),
                categories: by_category
                    .into_iter()
                    .map(|(c, days)| cycle::CategoryPurchases { category: c.to_string(), days })
                    .collect(),
            }
        };
        let (mut estimated, mut due) = (0u64, 0u64);
        let mut typical: Vec<f64> = Vec::new();
        const CHUNK: usize = 20_000;
        for start in (0..d.members.len()).step_by(CHUNK) {
            let end = (start + CHUNK).min(d.members.len());
            let inputs: Vec<cycle::CycleInput> = (start..end).into_par_iter().map(input).collect();
            let results =
                cycle::purchase_cycles(&inputs, as_of, params).map_err(|e| AnalyticsError::model("cycle", e))?;
            drop(inputs);
            let texts: Vec<String> =
                results.par_iter().map(serde_json::to_string).collect::<Result<_, serde_json::Error>>()?;
            for ((i, res), text) in (start..end).zip(&results).zip(texts) {
                if let Some(est) = &res.overall {
                    estimated += 1;
                    due += u64::from(est.due);
                    typical.push(est.typical_interval_days);
                    self.members[i].next_purchase = Some(est.next_expected);
                    self.members[i].cycle_due = est.due;
                }
                self.put_text(i, "cycle", &text)?;
            }
        }
        typical.sort_by(f64::total_cmp);
        let median = typical.get(typical.len() / 2).copied();
        self.summary.insert("cycle".into(), json!({"estimated": estimated, "due": due}));
        self.result(
            "cycle",
            json!({"members_with_cycle": estimated, "due": due, "median_interval_days": median, "params": self.params.cycle}),
        );
        Ok(())
    }

    fn preferences(&mut self, d: &Dataset) -> Result<(), AnalyticsError> {
        let (p, respond, as_of) = (&self.params.preferences, self.params.campaign_response_days, self.as_of());
        // A member's preferences depend on their own rows alone: computed in parallel, a chunk of members at a
        // time (so the sections waiting to be filed stay few), then filed in member order.
        let one = |i: usize| -> Result<Option<(String, bool)>, AnalyticsError> {
            let m = &d.members[i];
            let lines = d.lines.of(i);
            let days = d.purchases.of(i);
            if lines.is_empty() && days.is_empty() {
                return Ok(None);
            }
            let mut campaigns = preferences::CampaignActivity::default();
            for e in d.streams.of(i) {
                let opened = &*e.event_type == "campaign_open";
                if !opened && &*e.event_type != "campaign_click" {
                    continue;
                }
                if opened {
                    campaigns.opens += 1;
                } else {
                    campaigns.clicks += 1;
                }
                let day = e.at.date_naive();
                let until = day.checked_add_days(Days::new(respond.max(0) as u64)).unwrap_or(day);
                if days.iter().any(|p| p.day >= day && p.day <= until) {
                    campaigns.responded += 1;
                }
            }
            let input = preferences::PreferenceInput {
                member_id: m.member_id,
                lines: lines
                    .iter()
                    .map(|l| preferences::PreferenceLine {
                        day: l.day,
                        category_path: d.sku(l).category.as_deref().unwrap_or_default(),
                        brand: d.sku(l).brand.as_deref().unwrap_or_default(),
                        amount_fen: l.amount,
                        unit_price_fen: l.unit_price,
                    })
                    .collect(),
                orders: days
                    .iter()
                    .flat_map(|p| {
                        let promo = p.promo_orders.min(p.orders) as usize;
                        let plain = p.orders.saturating_sub(p.promo_orders) as usize;
                        std::iter::repeat_n(preferences::PreferenceOrder { day: p.day, promoted: true }, promo).chain(
                            std::iter::repeat_n(preferences::PreferenceOrder { day: p.day, promoted: false }, plain),
                        )
                    })
                    .collect(),
                campaigns,
            };
            let prefs =
                preferences::preferences(&input, as_of, p).map_err(|e| AnalyticsError::model("preferences", e))?;
            let sensitive = prefs.promotion.share.unwrap_or(0.0) >= 0.5;
            Ok(Some((serde_json::to_string(&prefs)?, sensitive)))
        };
        let mut promo_members = 0u64;
        in_parallel(d.members.len(), one, |i, section| {
            if let Some((text, sensitive)) = section? {
                promo_members += u64::from(sensitive);
                self.put_text(i, "preferences", &text)?;
            }
            Ok(())
        })?;
        self.summary.insert("preferences".into(), json!({"promotion_sensitive_members": promo_members}));
        Ok(())
    }

    fn cohorts(&mut self, d: &Dataset) {
        let buyers: Vec<cohorts::MemberPurchaseDays> = d
            .members
            .iter()
            .enumerate()
            .filter(|(i, _)| !d.purchases.of(*i).is_empty())
            .map(|(i, m)| cohorts::MemberPurchaseDays {
                member_id: m.member_id,
                purchase_days: d.purchases.of(i).iter().map(|p| p.day).collect(),
            })
            .collect();
        let report = cohorts::cohort_report(&buyers, self.as_of(), &self.params.cohorts);
        self.summary.insert(
            "cohorts".into(),
            json!({"cohorts": report.cohorts.len(), "repurchase_rate": report.repurchase.rate}),
        );
        self.result("cohorts", serde_json::to_value(&report).unwrap_or(Value::Null));
    }

    fn journeys(&mut self, d: &Dataset) -> Result<(), AnalyticsError> {
        let events = super::funnel_events(d.streams.all());
        let mut reports = serde_json::Map::new();
        let mut summary = serde_json::Map::new();
        for (k, f) in self.params.funnels.iter().enumerate() {
            let report = funnels::funnel_report(&events, &f.definition)
                .map_err(|e| AnalyticsError::model("funnels", format!("funnel `{}`: {e}", f.name)))?;
            self.funnel_progress(d, k, f, &events)?;
            let last = report.steps.last().map(|s| s.entered).unwrap_or(0);
            let first = report.steps.first().map(|s| s.entered).unwrap_or(0);
            summary.insert(f.name.clone(), json!({"entered": first, "converted": last}));
            reports.insert(f.name.clone(), json!({"definition": f.definition, "report": report}));
        }
        let paths =
            funnels::paths::top_paths(&events, &self.params.paths).map_err(|e| AnalyticsError::model("paths", e))?;
        self.summary.insert("funnels".into(), Value::Object(summary));
        self.summary
            .insert("paths".into(), json!({"purchases": paths.target_events, "distinct": paths.distinct_paths}));
        self.result("funnels", json!({"window_days": self.params.journey_days, "funnels": reports}));
        self.result("paths", json!({"window_days": self.params.journey_days, "paths": paths}));
        Ok(())
    }

    /// Each member's place in funnel `f` (the profile's `funnels.<name>`), and its stalled tag.
    fn funnel_progress(
        &mut self,
        d: &Dataset,
        k: usize,
        f: &super::NamedFunnel,
        events: &[funnels::Event],
    ) -> Result<(), AnalyticsError> {
        let steps = &f.definition.steps;
        if let Some(st) = &f.stalled_tag
            && st.from_step + 1 >= steps.len()
        {
            return Err(AnalyticsError::model(
                "funnels",
                format!(
                    "funnels[{k}].stalled_tag.from_step: {} must be below the last step's index {} (funnel `{}`)",
                    st.from_step,
                    steps.len() - 1,
                    f.name
                ),
            ));
        }
        let progress = funnels::member_progress(events, &f.definition)
            .map_err(|e| AnalyticsError::model("funnels", format!("funnel `{}`: {e}", f.name)))?;
        // Sections are filed in member order.
        let mut progress: Vec<(usize, funnels::MemberProgress)> =
            progress.into_iter().filter_map(|p| Some((*d.index.get(&p.member_id)?, p))).collect();
        progress.sort_unstable_by_key(|&(i, _)| i);
        for (i, p) in progress {
            let last = p.reached - 1;
            let label = steps[last].display_label();
            let at = p.step_times[last];
            let state = json!({
                "reached": p.reached,
                "of": steps.len(),
                "last_step": label,
                "last_step_at": at,
                "converted": p.reached == steps.len(),
            });
            self.bodies.put_funnel(i, &f.name, &state.to_string())?;
            if let Some(st) = &f.stalled_tag
                && p.reached > st.from_step
                && p.reached < steps.len()
            {
                let next = steps[p.reached].display_label();
                let reason = format!(
                    "funnel `{}`: reached '{label}' on {} but not '{next}' within the window",
                    f.name,
                    at.date_naive()
                );
                self.stalled.push((i, st.tag.clone(), reason));
            }
        }
        Ok(())
    }

    fn kpis(&mut self, d: &Dataset) -> Result<(), AnalyticsError> {
        let start = self.window_start(self.params.kpi_days);
        let days: Vec<NaiveDate> = start.iter_days().take_while(|day| *day <= self.as_of()).collect();
        let pos = |day: NaiveDate| usize::try_from((day - start).num_days()).ok().filter(|&i| i < days.len());
        let mut aggs: Vec<kpis::DailyAggregate> =
            days.iter().map(|&date| kpis::DailyAggregate::quiet(date, 0)).collect();
        let mut before_window = 0i64;
        for m in &d.members {
            let day = m.registered_at.date_naive();
            match pos(day) {
                Some(i) => aggs[i].new_members += 1,
                None if day < start => before_window += 1,
                None => {}
            }
        }
        let mut total = before_window;
        for a in &mut aggs {
            total += a.new_members;
            a.members_total = total;
        }
        for &(day, n) in &d.active_by_day {
            if let Some(i) = pos(day) {
                aggs[i].active_members = n;
            }
        }
        for i in 0..d.members.len() {
            let purchases = d.purchases.of(i);
            for (k, p) in purchases.iter().enumerate() {
                if let Some(j) = pos(p.day) {
                    let a = &mut aggs[j];
                    a.orders += i64::from(p.orders);
                    a.gmv_fen += p.amount;
                    a.buyers += 1;
                    a.repeat_buyers += i64::from(k > 0);
                }
            }
            for p in d.points.of(i) {
                if let Some(j) = pos(p.day) {
                    aggs[j].points_issued += p.earned;
                    aggs[j].points_redeemed += p.spent;
                }
            }
        }
        let series = kpis::daily_kpis(&aggs).map_err(|e| AnalyticsError::model("kpis", e))?;
        let mut params = self.params.anomalies.clone();
        if params.alerts_from.is_none() {
            // Alert on the days this run is the first to see: since the previous run, or the last week.
            params.alerts_from = Some(match self.previous_run {
                Some(prev) if prev.as_of < self.as_of() => prev.as_of.succ_opt().unwrap_or(prev.as_of),
                _ => self.as_of().checked_sub_days(Days::new(6)).unwrap_or(start),
            });
        }
        let alerts = kpis::detect_anomalies(&aggs, &params).map_err(|e| AnalyticsError::model("kpis", e))?;
        self.notices = alerts
            .iter()
            .map(|a| {
                let kpi =
                    serde_json::to_value(a.kpi).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                crate::notify::Notice {
                    id: format!("analytics.kpi_anomaly:{kpi}:{}", a.date),
                    event_type: crate::notify::EventType::KpiAnomaly,
                    member_id: 0,
                    occurred_at: Dataset::cut_off(a.date),
                    data: serde_json::to_value(a).unwrap_or(Value::Null),
                }
            })
            .collect();
        self.summary.insert("kpis".into(), json!({"days": series.len(), "alerts": alerts.len()}));
        self.result("kpis", json!({"days": series, "alerts": alerts, "alerts_from": params.alerts_from}));
        Ok(())
    }

    /// Rule, model and keyword tags observed this run, merged with the stored tags (decay, reinforcement,
    /// drops). Returns the tags to store: the computed ones, and the manual ones with their weights (which
    /// decay only under a configured manual half-life).
    fn tags(&mut self, d: &Dataset, stored: Vec<MemberTagRow>) -> Result<Vec<MemberTagRow>, AnalyticsError> {
        use tagk::{FeatureDecl, FeatureSchema, FeatureType, TagObservation, TagSource, Value as F};
        let at = Dataset::cut_off(self.as_of());
        let names: [(&str, FeatureType); 11] = [
            ("orders_365d", FeatureType::Number),
            ("monetary_365d_fen", FeatureType::Number),
            ("aov_fen", FeatureType::Number),
            ("promo_share", FeatureType::Number),
            ("recent_events", FeatureType::Number),
            ("tenure_days", FeatureType::Number),
            ("recency_days", FeatureType::Number),
            ("stage", FeatureType::Text),
            ("segment", FeatureType::Text),
            ("clv_fen", FeatureType::Number),
            ("churn_risk", FeatureType::Number),
        ];
        let schema = FeatureSchema::new(
            names.iter().map(|(n, k)| FeatureDecl { name: n.to_string(), kind: *k, description: None }).collect(),
        )
        .map_err(|e| AnalyticsError::model("tags", e))?;
        let rules =
            tagk::RuleSet::compile(&self.params.rule_tags, &schema).map_err(|e| AnalyticsError::model("tags", e))?;
        let start = self.window_start(self.params.rfm.window_days);
        // Evidence that does not come from the member's own row: funnel stalls and keyword hits, by member
        // position. Stored tags likewise; those of members outside this run (merged away since) go last.
        let mut side: Vec<(usize, TagObservation)> = std::mem::take(&mut self.stalled)
            .into_iter()
            .map(|(i, tag, reason)| {
                let obs = TagObservation {
                    member_id: d.members[i].member_id,
                    tag,
                    category: "funnel".into(),
                    source: TagSource::Model,
                    at,
                    strength: 1.0,
                    reason,
                };
                (i, obs)
            })
            .collect();
        let tagger = tagk::KeywordTagger::new(self.params.keyword_tags.clone(), &self.params.keywords)
            .map_err(|e| AnalyticsError::model("tags", e))?;
        let texts: Vec<tagk::MemberText> = d
            .texts
            .iter()
            .filter(|(m, _, _)| d.index.contains_key(m))
            .map(|(m, at, text)| tagk::MemberText { member_id: *m, at: *at, text: text.clone() })
            .collect();
        let keyword = tagger.tag_texts(&texts).observations;
        drop(texts);
        side.extend(keyword.into_iter().filter_map(|o| Some((*d.index.get(&o.member_id)?, o))));
        side.sort_by_key(|(i, _)| *i);
        let outside = d.members.len();
        let mut previous: Vec<(usize, tagk::MemberTag)> = stored
            .into_iter()
            .filter_map(|t| {
                let source: TagSource = serde_json::from_value(Value::String(t.source)).ok()?;
                let tag = tagk::MemberTag {
                    member_id: t.member_id,
                    tag: t.tag,
                    category: t.category,
                    source,
                    weight: t.weight,
                    support_weight: t.support_weight,
                    last_supported_at: t.last_supported_at,
                    first_tagged_at: t.first_tagged_at,
                    reason: t.reason,
                };
                Some((d.index.get(&t.member_id).copied().unwrap_or(outside), tag))
            })
            .collect();
        previous.sort_by_key(|(i, t)| (*i, t.member_id));
        let mut side = side.into_iter().peekable();
        let mut previous = previous.into_iter().peekable();

        // Each member's tags depend on that member's evidence and stored tags alone, so members are folded
        // a chunk at a time: a million members' observations, folded tags and changes are never held at
        // once, only the rows to store.
        const CHUNK: usize = 50_000;
        let mut rows: Vec<MemberTagRow> = Vec::new();
        let mut by_tag: BTreeMap<String, u64> = BTreeMap::new();
        let mut changed = 0usize;
        let mut dropped_manual = Vec::new();
        for first in (0..=outside).step_by(CHUNK) {
            let end = (first + CHUNK).min(outside + 1);
            let mut observations: Vec<TagObservation> = Vec::new();
            for i in first..end.min(outside) {
                let m = &d.members[i];
                let acc = &self.members[i];
                let in_window: Vec<_> = d.purchases.of(i).iter().filter(|p| p.day >= start).collect();
                let orders: i64 = in_window.iter().map(|p| i64::from(p.orders)).sum();
                let money: i64 = in_window.iter().map(|p| p.amount).sum();
                let promo: i64 = in_window.iter().map(|p| i64::from(p.promo_orders)).sum();
                let num = |x: f64| Some(F::Number(x));
                let row: Vec<Option<F>> = vec![
                    num(orders as f64),
                    num(money as f64),
                    if orders > 0 { num(money as f64 / orders as f64) } else { None },
                    if orders > 0 { num(promo as f64 / orders as f64) } else { None },
                    num(d.events.of(i).iter().map(|e| e.recent).sum::<i64>() as f64),
                    num((self.as_of() - m.registered_at.date_naive()).num_days() as f64),
                    d.purchases.of(i).last().map(|p| F::Number((self.as_of() - p.day).num_days() as f64)),
                    acc.stage.map(|s| F::Text(s.code().to_string())),
                    acc.rfm_segment.map(|s| F::Text(s.code().to_string())),
                    acc.clv_fen.map(|c| F::Number(c as f64)),
                    acc.churn_risk.map(F::Number),
                ];
                observations.extend(rules.observations(m.member_id, row.as_slice(), at));
                let mut model = |tag: String, category: &str, reason: String| {
                    observations.push(TagObservation {
                        member_id: m.member_id,
                        tag,
                        category: category.to_string(),
                        source: TagSource::Model,
                        at,
                        strength: 1.0,
                        reason,
                    })
                };
                if let Some(seg) = acc.rfm_segment {
                    model(seg.name_zh().to_string(), "value", format!("RFM segment {}", seg.name_en()));
                }
                if let Some(stage) = acc.stage {
                    model(stage.name_zh().to_string(), "lifecycle", format!("lifecycle stage {}", stage.name_en()));
                }
                if acc.cycle_due {
                    model("待复购".to_string(), "behaviour", "purchase cycle says the next purchase is due".into());
                }
            }
            while let Some((_, o)) = side.next_if(|(i, _)| *i < end) {
                observations.push(o);
            }
            let mut chunk_previous: Vec<tagk::MemberTag> = Vec::new();
            while let Some((_, t)) = previous.next_if(|(i, _)| *i < end) {
                chunk_previous.push(t);
            }
            let update = tagk::update_member_tags(&chunk_previous, &observations, at, &self.params.tag_weights)
                .map_err(|e| AnalyticsError::model("tags", e))?;
            drop(observations);
            let tagk::TagUpdate { tags, changes } = update;
            changed += changes.len();
            dropped_manual.extend(
                changes
                    .into_iter()
                    .filter(|c| c.source == TagSource::Manual && c.kind == tagk::ChangeKind::Dropped)
                    .map(|c| (c.member_id, c.tag)),
            );
            rows.extend(tags.into_iter().map(|t| {
                *by_tag.entry(t.tag.clone()).or_default() += 1;
                MemberTagRow {
                    member_id: t.member_id,
                    source: serde_json::to_value(t.source)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    tag: t.tag,
                    category: t.category,
                    weight: t.weight,
                    support_weight: t.support_weight,
                    last_supported_at: t.last_supported_at,
                    first_tagged_at: t.first_tagged_at,
                    reason: t.reason,
                }
            }));
        }
        self.dropped_manual_tags = dropped_manual;
        self.summary.insert("tags".into(), json!({"member_tags": rows.len(), "changes": changed}));
        self.result("tags", json!({"members_by_tag": by_tag, "rule_tags": self.params.rule_tags, "keyword_tags": self.params.keyword_tags}));
        Ok(rows)
    }

    fn finish(self, d: &Dataset) -> Result<AnalyticsOutput, AnalyticsError> {
        let columns = d
            .members
            .iter()
            .zip(self.members)
            .map(|(m, acc)| MemberAnalyticsRow {
                member_id: m.member_id,
                body: (),
                rfm_segment: acc.rfm_segment.map(|s| s.code().to_string()),
                stage: acc.stage.map_or("potential", |s| s.code()).to_string(),
                clv_fen: acc.clv_fen,
                prob_alive: acc.prob_alive,
                churn_risk: acc.churn_risk,
                cluster: acc.cluster,
                next_purchase: acc.next_purchase,
            })
            .collect();
        let members = Box::new(self.bodies.into_rows(columns)?);
        let mut summary = self.summary;
        summary.insert("members".into(), json!(d.members.len()));
        summary.insert("changes".into(), json!(self.changes.len()));
        Ok(AnalyticsOutput {
            summary: Value::Object(summary),
            results: self.results,
            members,
            changes: self.changes,
            tags: Vec::new(),
            keep_runs: self.params.keep_runs,
            notices: self.notices,
            dropped_manual_tags: self.dropped_manual_tags,
        })
    }
}

/// Members' churn histories, built from the grouped rows when the model asks for one (all of them at once
/// would be a second copy of every purchase, points day and engagement row).
struct MemberHistories<'a>(&'a Dataset);

impl churn::ChurnHistories for MemberHistories<'_> {
    fn len(&self) -> usize {
        self.0.members.len()
    }

    fn history(&self, i: usize) -> std::borrow::Cow<'_, churn::ChurnHistory> {
        let d = self.0;
        let m = &d.members[i];
        std::borrow::Cow::Owned(churn::ChurnHistory {
            member_id: m.member_id,
            registered_on: m.registered_at.date_naive(),
            purchases: d
                .purchases
                .of(i)
                .iter()
                .map(|p| churn::DatedAmount { day: p.day, amount_fen: p.amount })
                .collect(),
            refunds: d.refunds.of(i).iter().map(|r| churn::DatedAmount { day: r.day, amount_fen: r.amount }).collect(),
            engagement: d
                .engagement
                .of(i)
                .iter()
                .filter_map(|e| {
                    Some(churn::EngagementRecord {
                        day: e.day,
                        kind: churn::EngagementKind::from_event_type(&e.event_type)?,
                        count: u32::try_from(e.count).unwrap_or(u32::MAX),
                    })
                })
                .collect(),
            points: d
                .points
                .of(i)
                .iter()
                .flat_map(|p| {
                    [(p.earned, 1), (p.spent, -1)]
                        .into_iter()
                        .filter(|(n, _)| *n != 0)
                        .map(move |(n, sign)| churn::PointsMovement { day: p.day, points: n * sign })
                })
                .collect(),
        })
    }
}

/// Members' results are independent of each other: compute them in parallel, a chunk at a time (so the
/// results waiting to be filed stay few), then file them in order, so a run's output does not depend on how
/// the work was split.
fn in_parallel<T: Send>(
    n: usize,
    compute: impl Fn(usize) -> T + Sync + Send,
    mut file: impl FnMut(usize, T) -> Result<(), AnalyticsError>,
) -> Result<(), AnalyticsError> {
    use rayon::prelude::*;
    const CHUNK: usize = 20_000;
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        let done: Vec<T> = (start..end).into_par_iter().map(&compute).collect();
        for (k, t) in (start..end).zip(done) {
            file(k, t)?;
        }
    }
    Ok(())
}

fn stage_of(code: &str) -> Option<lifecycle::LifecycleStage> {
    lifecycle::LifecycleStage::ALL.into_iter().find(|s| s.code() == code)
}
