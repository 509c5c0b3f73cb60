//! Risk control (风控) at work: the policy in force (a setting, the built-in example until an operator
//! changes it), a member's flags, and clearing one. Flags are raised where activity is written — by the
//! `Earner` when earning settles and by [`App::redeem`] when a redemption is accepted — inside those writes'
//! transactions; an open flag blocks redemptions, never earning.

use crate::error::Invalid;
use crate::loyalty::risk::{self, RiskPolicy};
use crate::members::MemberId;
use crate::security::Principal;
use crate::store::{Actor, ClearStored, RiskFlagRecord, Store, StoreError};

use super::{App, AppError};

/// Setting under which the risk policy lives (JSON).
pub(crate) const RISK_SETTING: &str = "loyalty.risk";

/// The risk policy shipped with Huiyuan (the kernel's example), stored on a shop's first start.
pub fn default_risk_policy() -> RiskPolicy {
    RiskPolicy::from_toml(risk::EXAMPLE_TOML).unwrap_or_else(|e| panic!("the built-in risk policy does not load: {e}"))
}

/// The policy in force; the built-in one if none is stored yet.
pub(crate) async fn policy_in_force(store: &dyn Store) -> Result<RiskPolicy, StoreError> {
    match store.setting(RISK_SETTING).await? {
        None => Ok(default_risk_policy()),
        Some(body) => RiskPolicy::from_json(&body).map_err(|e| StoreError::Corrupt(format!("risk policy: {e}"))),
    }
}

/// Store the built-in policy if the shop has none (first start).
pub(crate) async fn ensure_policy(store: &dyn Store) -> Result<(), StoreError> {
    if store.setting(RISK_SETTING).await?.is_none() {
        let body = serde_json::to_string(&default_risk_policy())
            .map_err(|e| StoreError::Corrupt(format!("risk policy: {e}")))?;
        store.set_setting(RISK_SETTING, &body).await?;
    }
    Ok(())
}

impl App {
    /// The risk policy in force.
    pub async fn risk_policy(&self) -> Result<RiskPolicy, AppError> {
        Ok(policy_in_force(self.store.as_ref()).await?)
    }

    /// Replace the risk policy (validated; the error names the field); audited with the policy itself.
    /// Open flags stay open: a looser policy does not clear them, an operator does.
    pub async fn put_risk_policy(&self, policy: &RiskPolicy, who: &Principal) -> Result<Result<(), Invalid>, AppError> {
        if let Err(e) = policy.validate() {
            return Ok(Err(e));
        }
        let body = serde_json::to_string(policy).map_err(|e| StoreError::Corrupt(format!("risk policy: {e}")))?;
        self.store.put_risk_policy(RISK_SETTING, &body, &Actor { id: who.key_id.clone(), at: self.now() }).await?;
        Ok(Ok(()))
    }

    /// A member's risk flags, newest first.
    pub async fn risk_flags(&self, member: MemberId) -> Result<Vec<RiskFlagRecord>, AppError> {
        Ok(self.store.risk_flags(member).await?)
    }

    /// Clear a flag: the operator is the caller's key, the note says why. Audited. Clearing again with the
    /// same note by the same operator (a retry) answers with the cleared flag; otherwise an already cleared
    /// flag is refused (`already_cleared`).
    pub async fn clear_risk_flag(
        &self,
        member: MemberId,
        flag_id: i64,
        note: &str,
        who: &Principal,
    ) -> Result<ClearStored, AppError> {
        let now = self.now();
        let (operator, note) = (who.key_id.clone(), note.to_string());
        let op: crate::store::ClearOp = Box::new(move |flag| {
            let retry =
                flag.cleared_by.as_deref() == Some(operator.trim()) && flag.note.as_deref() == Some(note.trim());
            if retry {
                return Ok(flag);
            }
            risk::clear(&flag, &operator, &note, now)
        });
        Ok(self.store.clear_risk_flag(member, flag_id, op, &Actor { id: who.key_id.clone(), at: now }).await?)
    }
}
