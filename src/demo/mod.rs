//! The demo shop generator.
