//! Rewards and redemptions: the catalog, redeeming points for a reward (points, stock and the record in one
//! transaction, idempotent by the caller's key), and cancelling a redemption (points and stock back).

use chrono::DateTime;

use crate::loyalty::ledger::{Ledger, Source, Wallet};
use crate::loyalty::rewards::{self, CancelPolicy, RedeemContext, Redemption, Reward};
use crate::loyalty::risk::{self, Activity, ActivityKind};
use crate::members::MemberId;
use crate::security::Principal;
use crate::store::{Actor, CancelWrite, RedeemFailure, RedeemStored, RedeemWrite, RewardRecord};

use super::{App, AppError};

/// What a redemption request came to.
#[derive(Debug)]
pub enum Redeemed {
    Created(Redemption),
    Replayed(Redemption),
    KeyReused,
    NoSuchReward,
    NoSuchMember,
    NoSuchRedemption,
    Failed(RedeemFailure),
}

impl From<RedeemStored> for Redeemed {
    fn from(s: RedeemStored) -> Self {
        match s {
            RedeemStored::Created(r) => Redeemed::Created(r),
            RedeemStored::Replayed(r) => Redeemed::Replayed(r),
            RedeemStored::KeyReused(_) => Redeemed::KeyReused,
            RedeemStored::NoSuchReward => Redeemed::NoSuchReward,
            RedeemStored::NoSuchRedemption => Redeemed::NoSuchRedemption,
            RedeemStored::Failed(f) => Redeemed::Failed(f),
        }
    }
}

/// A redemption as risk control counts it.
fn redeem_activity(r: &Redemption) -> Activity {
    Activity { at: r.created_at, kind: ActivityKind::Redeem, points: r.points }
}

impl App {
    /// Create or replace a reward (validated; the error names the field).
    pub async fn put_reward(
        &self,
        reward: &Reward,
        who: &Principal,
    ) -> Result<Result<RewardRecord, crate::error::Invalid>, AppError> {
        if let Err(e) = reward.validate() {
            return Ok(Err(e));
        }
        Ok(Ok(self.store.put_reward(reward, &Actor { id: who.key_id.clone(), at: self.now() }).await?))
    }

    /// Redeem a reward for a member, idempotent on `key`: the points are debited (earliest-expiring first),
    /// a unit of stock taken and the redemption recorded in one transaction, or nothing happens.
    pub async fn redeem(&self, member: MemberId, reward_id: &str, key: &str) -> Result<Redeemed, AppError> {
        let facts = self.store.member_facts(&[member]).await?;
        if !facts.get(&member).is_some_and(|f| f.active) {
            return Ok(Redeemed::NoSuchMember);
        }
        let cfg = self.ledger_config()?;
        let tier = self.tier_of(member).await?.unwrap_or_default();
        let now = self.now();
        let (op_key, seed) = (format!("redeem:{key}"), rewards::draw_seed(key));
        let policy = super::risk::policy_in_force(self.store.as_ref()).await?;
        let op: crate::store::RedeemOp = Box::new(move |input| {
            let mut ledger = Ledger::from_entries(cfg.clone(), &input.history).map_err(RedeemFailure::Ledger)?;
            let available = ledger.balances(now, chrono::Duration::zero()).available;
            let ctx = RedeemContext {
                tier,
                history: input.past.iter().map(Into::into).collect(),
                stock_left: input.stock_left.unwrap_or(0),
                available_points: available,
                blocked: risk::block_reason(&input.flags),
                time_zone: cfg.tz,
                seed,
            };
            let plan = rewards::check(&input.reward, &ctx, now).map_err(RedeemFailure::Refused)?;
            let source = Source::Reward { reward_id: input.reward.id.clone() };
            let mut entries =
                ledger.redeem(&op_key, plan.points, source.clone(), now).map_err(RedeemFailure::Ledger)?.entries;
            let redemption = Redemption::new(input.redemption_id, member, &plan, now);
            // A lottery that drew bonus points credits them at once.
            if let rewards::Deliver::Points { points } = &redemption.deliver {
                let o = ledger
                    .earn(&format!("prize:{}", input.redemption_id), Wallet::Points, *points, source, now)
                    .map_err(RedeemFailure::Ledger)?;
                entries.extend(o.entries);
            }
            // Judged once accepted: the redemption that crosses a limit goes through and flags the member,
            // which blocks the next one until an operator clears the flag.
            // `now` was read before the member's lock was taken; a redemption stored meanwhile may carry a
            // later time, yet this one is decided after it: judge it as no earlier than the latest stored.
            let recent: Vec<Activity> = input.recent.iter().map(redeem_activity).collect();
            let mut new = redeem_activity(&redemption);
            new.at = recent.iter().map(|a| a.at).fold(new.at, DateTime::max);
            let crossings = risk::crossed(&policy, &recent, &new);
            Ok(RedeemWrite { entries, redemption, crossings })
        });
        Ok(self.store.redeem(member, reward_id, key, op, now).await?.into())
    }

    /// Cancel a redemption: the points come back (as a new lot, since the spent lots may have expired since),
    /// a unit of stock returns, the record says cancelled. Cancelling again answers with the same record.
    /// Asked of a merged member, it cancels on the survivor, which the merge gave the redemption to.
    pub async fn cancel_redemption(&self, member: MemberId, redemption_id: i64) -> Result<Redeemed, AppError> {
        let Some(member) = self.store.live_member(member).await? else { return Ok(Redeemed::NoSuchRedemption) };
        let cfg = self.ledger_config()?;
        let now = self.now();
        // A coupon it issued: a used coupon refuses the cancel, an unused one is voided with it.
        let coupon = self.redemption_coupon(member, redemption_id).await?;
        let item_used =
            coupon.as_ref().is_some_and(|c| matches!(c.state, crate::loyalty::coupons::CouponState::Redeemed { .. }));
        let op: crate::store::CancelOp = Box::new(move |input| {
            let mut ledger = Ledger::from_entries(cfg, &input.history).map_err(RedeemFailure::Ledger)?;
            if input.redemption.state == rewards::RedemptionState::Cancelled {
                return Ok(CancelWrite { entries: Vec::new(), redemption: input.redemption, stock_back: 0 });
            }
            let c = rewards::cancel(&input.redemption, now, &CancelPolicy { item_used, ..CancelPolicy::default() })
                .map_err(RedeemFailure::CancelRefused)?;
            let source = Source::Reward { reward_id: input.redemption.reward_id.clone() };
            let mut entries = Vec::new();
            if c.points_back > 0 {
                let key = format!("cancel:{redemption_id}");
                entries = ledger
                    .earn(&key, Wallet::Points, c.points_back, source, now)
                    .map_err(RedeemFailure::Ledger)?
                    .entries;
            }
            Ok(CancelWrite { entries, redemption: c.redemption, stock_back: c.stock_back })
        });
        let out = self.store.cancel_redemption(member, redemption_id, op).await?;
        if let (RedeemStored::Created(_), Some(c)) = (&out, &coupon) {
            let void: crate::store::CouponOp = Box::new(|c| crate::loyalty::coupons::void(&c));
            self.store.update_coupon(&c.code, void, now, None).await?;
        }
        Ok(out.into())
    }

    /// The coupon a coupon redemption issued, if any.
    async fn redemption_coupon(
        &self,
        member: MemberId,
        redemption_id: i64,
    ) -> Result<Option<crate::loyalty::coupons::Coupon>, AppError> {
        let list = self.store.member_redemptions(member).await?;
        let Some(code) = list.into_iter().find(|r| r.id == redemption_id).and_then(|r| match r.deliver {
            rewards::Deliver::Coupon { .. } => r.item_ref,
            _ => None,
        }) else {
            return Ok(None);
        };
        Ok(self.store.coupon(&code).await?)
    }
}
