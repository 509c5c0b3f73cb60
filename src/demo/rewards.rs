//! The demo shop's rewards catalog (积分商城) and the redemptions its members make with the points their
//! history earned: the richer a member's balance, the likelier a redemption, and the dearest reward they can
//! afford is the usual pick. Redemptions go through `App::redeem` (idempotent keys), so balances, stock and
//! the ledger are exactly what the real service would hold.

use crate::app::{App, AppError, Redeemed};
use crate::loyalty::rewards::Reward;
use crate::security::Principal;

/// The catalog, TOML as an operator would write it.
const CATALOG: &str = r#"
[[rewards]]
id = "tea-sample"
name = "新品茶样 3 包"
kind = { type = "goods", sku = "GIFT-TEA-SAMPLE" }
points = 300
stock = 5000
limits = [{ period = "month", count = 2 }]

[[rewards]]
id = "tea-cup"
name = "青瓷品茗杯"
kind = { type = "goods", sku = "GIFT-CUP" }
points = 1500
stock = 800
limits = [{ period = "year", count = 1 }]

[[rewards]]
id = "tea-set"
name = "旅行茶具套装"
kind = { type = "goods", sku = "GIFT-TEA-SET" }
points = 4000
cash = 2900
stock = 200
tiers = ["gold", "diamond"]

[[rewards]]
id = "spa"
name = "门店茶艺体验"
kind = { type = "service" }
points = 2500
stock = 300
"#;

#[derive(serde::Deserialize)]
struct Catalog {
    rewards: Vec<Reward>,
}

/// Store the catalog and let members redeem; returns the number of redemptions made.
pub async fn redeem(app: &App, seed: u64) -> Result<u64, AppError> {
    let catalog: Catalog = toml::from_str(CATALOG)
        .map_err(|e| AppError::Config(format!("the demo rewards catalog does not load: {e}")))?;
    let who = Principal::cli();
    for r in &catalog.rewards {
        if let Err(e) = app.put_reward(r, &who).await? {
            return Err(AppError::Config(format!("demo reward {}: {e}", r.id)));
        }
    }
    let mut by_cost: Vec<&Reward> = catalog.rewards.iter().collect();
    by_cost.sort_by_key(|r| std::cmp::Reverse(r.points));
    let mut made = 0;
    let mut after = 0;
    loop {
        let ids = app.store.ledger_members(after, 1000).await?;
        let Some(&last) = ids.last() else { break };
        after = last;
        let standing = app.store.available_points(&ids).await?;
        for m in ids {
            let (available, tier) = standing.get(&m).cloned().unwrap_or_default();
            // One member in five with points to spend redeems something, more often the richer they are.
            let roll = (super::stream(seed, m as u64, 0x5245_4445_454D) % 1000) as i64;
            if available < 300 || roll >= (200 + available / 50).min(600) {
                continue;
            }
            let tier = tier.unwrap_or_default();
            let Some(pick) =
                by_cost.iter().find(|r| r.points <= available && (r.tiers.is_empty() || r.tiers.contains(&tier)))
            else {
                continue;
            };
            if let Redeemed::Created(_) = app.redeem(m, &pick.id, &format!("demo-{m}")).await? {
                made += 1;
            }
        }
    }
    Ok(made)
}
