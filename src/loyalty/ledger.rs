//! The points ledger kernel.
