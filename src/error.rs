//! Errors shared by every domain: a rejected input names its field, so the HTTP layer, the CLI and the
//! importer can all tell the caller exactly what to fix.

use std::fmt;

/// A rejected input: a machine-readable code, the offending field (a JSON path such as `lines[2].quantity`)
/// and a human message. Domain validators return it; the edges render it (HTTP 422, CLI line number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: &'static str,
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code, field: field.into(), message: message.into() }
    }

    /// A field that is absent but required.
    pub fn missing(field: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("`{field}` is required");
        Self { code: "missing_field", field, message }
    }

    /// Prefix the field path, so nested validators can report `lines[3].sku` instead of `sku`.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_string()
        } else if self.field.starts_with('[') {
            format!("{prefix}{}", self.field)
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.field, self.code, self.message)
    }
}

impl std::error::Error for Invalid {}

/// Convenience alias for validators.
pub type Checked<T> = Result<T, Invalid>;
