//! Bulk import of members, orders and events from CSV or JSON Lines files (gzip read directly).
