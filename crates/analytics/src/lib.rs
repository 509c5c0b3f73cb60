//! Huiyuan's behaviour-analytics kernels.
//!
//! Every function here takes per-member (or per-order, per-event) summaries in and gives results out: no
//! database, no clock, no network. The main crate's store aggregates the inputs (SQL GROUP BY where that is
//! natural), calls these kernels off the async runtime, and stores what they return. Keeping the kernels in
//! their own crate makes that boundary a compile-time fact and lets them be tested and benchmarked alone.
//!
//! Conventions: days are `chrono::NaiveDate` in UTC; money is integer minor units (fen, `i64`) at the
//! boundary and `f64` only inside statistical models; results carry the reasons an operator reads.

pub mod basket;
pub mod churn;
pub mod clusters;
pub mod clv;
pub mod cohorts;
pub mod cycle;
pub mod funnels;
pub mod kpis;
pub mod lifecycle;
pub mod preferences;
pub mod rfm;
pub mod tags;
