//! The loyalty engine: points and growth-value ledger, earning rules, tiers, rewards and coupons.
//! Pure kernels live here (no I/O); the store and the API wrap them.

pub mod backtest;
pub mod coupons;
pub mod earning;
pub mod ledger;
pub mod liability;
pub mod rewards;
pub mod risk;
pub mod rules;
pub mod tiers;
