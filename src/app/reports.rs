//! Programme-wide loyalty reports: the points liability, streamed over every member's ledger in batches
//! (the kernel is `loyalty::liability`), and the backtest of a draft programme against past history.

use chrono::{DateTime, Utc};

use crate::loyalty::ledger::Ledger;
use crate::loyalty::liability::{Liability, LiabilityBuilder, Params};
use crate::store::StoreError;

use super::{App, AppError};

/// Members read per batch by the reports.
const REPORT_BATCH: i64 = 1000;

impl App {
    /// The points liability as of now: outstanding points by expiry month and tier, debt, and the points
    /// issued, redeemed, expired, reversed and adjusted per month within `[from, to)`.
    pub async fn liability(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Liability, AppError> {
        let cfg = self.ledger_config()?;
        let params = Params {
            as_of: self.now(),
            from,
            to,
            tz: cfg.tz,
            cost_per_100_points_fen: self.config.loyalty.cost_per_100_points_fen,
        };
        let lowest = self.tier_program().await?.and_then(|p| p.tiers.first().map(|t| t.code.clone()));
        let mut builder = LiabilityBuilder::new(params);
        let mut after = 0;
        loop {
            let ids = self.store.ledger_members(after, REPORT_BATCH).await?;
            let Some(&last) = ids.last() else { break };
            let batch = self.store.ledgers_and_tiers(&ids).await?;
            let (cfg, lowest) = (cfg.clone(), lowest.clone().unwrap_or_default());
            // Rebuilding ledgers is CPU work: off the async workers, one batch at a time.
            builder = tokio::task::spawn_blocking(move || {
                for (m, entries, tier) in batch {
                    let ledger = Ledger::from_entries(cfg.clone(), &entries)
                        .map_err(|e| StoreError::Corrupt(format!("ledger of member {m}: {e}")))?;
                    builder.add(&ledger, tier.as_ref().map_or(lowest.as_str(), |t| t.tier.as_str()));
                }
                Ok::<_, StoreError>(builder)
            })
            .await
            .map_err(|e| AppError::Config(format!("liability task failed: {e}")))??;
            after = last;
        }
        Ok(builder.finish())
    }
}

/// Members replayed per batch by the backtest.
const BACKTEST_BATCH: usize = 500;

impl App {
    /// Replay the shop's history up to `to` under the programme in force and under a draft (rules, and
    /// tiers if given; otherwise the tiers in force), writing nothing; flows are reported within
    /// `[from, to)`. See `loyalty::backtest` for what is replayed and how.
    pub async fn backtest(
        &self,
        draft_rules: crate::loyalty::rules::RuleSet,
        draft_tiers: Option<crate::loyalty::tiers::TierProgram>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<crate::loyalty::backtest::Backtest, AppError> {
        use std::collections::HashMap;

        use crate::loyalty::backtest::{BacktestBuilder, Cause, MemberHistory, Programme};
        use crate::loyalty::ledger::{Kind, Wallet};
        use crate::loyalty::rules::RuleOrder;
        use crate::store::MemberFilter;

        let ledger = self.ledger_config()?;
        let (_, rules) =
            self.rules_in_force().await?.ok_or_else(|| AppError::Config("no earning rules are stored yet".into()))?;
        let tiers = self.tier_program().await?.unwrap_or_else(super::default_tiers);
        let current = Programme { rules, tiers: tiers.clone(), ledger: ledger.clone() };
        let draft = Programme { rules: draft_rules, tiers: draft_tiers.unwrap_or(tiers), ledger: ledger.clone() };
        let params = Params {
            as_of: to,
            from,
            to,
            tz: ledger.tz,
            cost_per_100_points_fen: self.config.loyalty.cost_per_100_points_fen,
        };
        let streak_rules = current.rules.clone();
        let mut builder = BacktestBuilder::new(current, draft, params);
        let filter = MemberFilter { status: Some(crate::members::MemberStatus::Active), ..MemberFilter::default() };
        let mut after = None;
        let mut done = 0u64;
        loop {
            let page = self.store.members(&filter, after, BACKTEST_BATCH as i64).await?;
            let Some(last) = page.last().map(|m| m.id) else { break };
            after = Some(last);
            let ids: Vec<_> = page.iter().filter(|m| m.registered_at <= to).map(|m| m.id).collect();
            let facts = self.store.member_facts(&ids).await?;
            let (order_ids, refund_ids, event_ids) = self.store.history_ids(&ids, to).await?;
            let orders = self.store.orders_by_ids(&order_ids).await?;
            let mut skus: Vec<String> = orders.iter().flat_map(|o| o.lines.iter().map(|l| l.sku.clone())).collect();
            skus.sort_unstable();
            skus.dedup();
            let catalog = self.store.sku_attributes(&skus).await?;
            let first_paid = self.store.first_paid_orders(&ids).await?;
            let mut cards = self.store.cards_of_members(&ids).await?;
            let mut causes: HashMap<crate::members::MemberId, Vec<Cause>> = HashMap::new();
            for o in &orders {
                let Some(m) = o.member_id else { continue };
                let order = RuleOrder::from_view(o, |sku| catalog.get(sku).cloned().unwrap_or((None, None)));
                let first = first_paid.get(&m) == Some(&o.id);
                causes.entry(m).or_default().push(Cause::Order { order_id: o.id, order, first_paid: first });
            }
            for r in self.store.refund_reversals(&refund_ids).await? {
                causes.entry(r.member_id).or_default().push(Cause::Refund {
                    refund_id: r.refund_id,
                    order_id: r.order_id,
                    lines: r.lines,
                    at: r.refunded_at,
                });
            }
            for (referrer, referee, order_id, at) in self.store.referral_payouts(&ids, to).await? {
                causes.entry(referrer).or_default().push(Cause::Referral { referee, order_id, at });
            }
            let mut events = self.store.events_by_ids(&event_ids).await?;
            events.sort_by_key(|e| (e.1, e.4));
            let mut check_ins: HashMap<crate::members::MemberId, Vec<DateTime<Utc>>> = HashMap::new();
            for (_, m, kind, key, at) in events {
                let earlier = check_ins.entry(m).or_default();
                if let Some(b) = super::loyalty::behaviour(&kind, &key, at, earlier, &streak_rules) {
                    causes.entry(m).or_default().push(Cause::Behaviour(b));
                }
                if kind == "check_in" {
                    earlier.push(at);
                }
            }
            // What members did with their points: real redemptions (not cancelled) and operator adjustments.
            for (m, entries, _) in self.store.ledgers_and_tiers(&ids).await? {
                let mut adjustments: Vec<(String, Wallet, i64, DateTime<Utc>)> = Vec::new();
                for e in entries.iter().filter(|e| e.kind == Kind::Adjust && e.at <= to) {
                    match adjustments.iter_mut().find(|a| a.0 == e.op && a.1 == e.wallet) {
                        Some(a) => a.2 += e.amount,
                        None => adjustments.push((e.op.clone(), e.wallet, e.amount, e.at)),
                    }
                }
                let slot = causes.entry(m).or_default();
                for (op, wallet, amount, at) in adjustments.into_iter().filter(|a| a.2 != 0) {
                    slot.push(Cause::Adjust { key: op, wallet, amount, at });
                }
                for r in self.store.member_redemptions(m).await? {
                    if r.state != crate::loyalty::rewards::RedemptionState::Cancelled
                        && r.points > 0
                        && r.created_at <= to
                    {
                        slot.push(Cause::Spend {
                            key: format!("redemption-{}", r.id),
                            points: r.points,
                            at: r.created_at,
                        });
                    }
                }
            }
            let histories: Vec<MemberHistory> = ids
                .iter()
                .filter_map(|m| {
                    let f = facts.get(m).filter(|f| f.active)?;
                    Some(MemberHistory {
                        member: *m,
                        registered_at: f.registered_at,
                        birthday: f.birthday,
                        profile_complete: f.profile_complete,
                        referred_by: f.referred_by,
                        cards: cards.remove(m).unwrap_or_default(),
                        causes: causes.remove(m).unwrap_or_default(),
                    })
                })
                .collect();
            // Replaying is CPU work: off the async workers.
            builder = tokio::task::spawn_blocking(move || {
                for h in &histories {
                    builder.add(h);
                }
                builder
            })
            .await
            .map_err(|e| AppError::Config(format!("backtest task failed: {e}")))?;
            done += page.len() as u64;
            progress(done);
        }
        Ok(builder.finish())
    }
}
