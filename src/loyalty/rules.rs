//! The earning-rules evaluator.
