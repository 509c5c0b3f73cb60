//! Configuration: defaults, then a TOML file (`huiyuan.toml` or `--config`), then `HUIYUAN_*` environment
//! variables, then command-line flags.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything a running Huiyuan needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `sqlite://PATH` or `postgres://…`.
    pub database_url: String,
    /// The master key for personal-data encryption, as 64 hex characters. If absent, `key_file` is used.
    pub secret_key: Option<String>,
    /// Where the master key lives; created with a fresh key on first start if missing.
    pub key_file: PathBuf,
    /// Address to listen on.
    pub bind: String,
    pub port: u16,
    /// The shop's currency when an order does not say (ISO 4217).
    pub currency: String,
    /// The business time zone for reports (IANA name); storage is always UTC.
    pub timezone: String,
    /// If set at start, this admin key is ensured to exist (its digest is stored, never the key).
    pub admin_key: Option<String>,
    /// The points ledger's policies.
    pub loyalty: LoyaltyConfig,
    /// Delivery of outbox events to webhook endpoints.
    pub webhooks: WebhookConfig,
    /// Behaviour analytics: the schedule and every model's parameters.
    pub analytics: crate::analytics::AnalyticsParams,
}

/// How the delivery worker sends webhooks: how often it looks for due deliveries, how long it waits for a
/// receiver and how long it keeps retrying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookConfig {
    /// The server looks for due deliveries this often (seconds).
    pub interval_secs: u64,
    /// A receiver must answer within this many seconds.
    pub timeout_secs: u64,
    /// Attempts before a delivery is given up (`dead`); retries back off from 30 s, doubling.
    pub max_attempts: u32,
    /// The longest wait between two attempts (seconds).
    pub max_backoff_secs: i64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self { interval_secs: 2, timeout_secs: 10, max_attempts: 15, max_backoff_secs: 6 * 3600 }
    }
}

/// How points behave: expiry, the return window and what happens when a clawback finds points spent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoyaltyConfig {
    /// Points expire this many months after they are earned; 0 means never.
    pub expiry_months: u32,
    /// Order points stay pending this many days (the return window).
    pub return_window_days: i64,
    /// `allow_negative` (balance may go negative, redemptions blocked until positive) or `clamp_at_zero`.
    pub negative_policy: String,
    /// "Expiring soon" looks this many days ahead.
    pub expiring_soon_days: i64,
    /// The server settles queued loyalty work this often (seconds); writers also settle as they commit.
    pub settle_interval_secs: u64,
    /// The server matures pending points and expires due lots this often (seconds).
    pub jobs_interval_secs: u64,
    /// What points cost the brand when redeemed, in fen per 100 points (liability and backtest reports).
    pub cost_per_100_points_fen: i64,
}

impl Default for LoyaltyConfig {
    fn default() -> Self {
        Self {
            expiry_months: 12,
            return_window_days: 7,
            negative_policy: "allow_negative".into(),
            expiring_soon_days: 30,
            settle_interval_secs: 5,
            jobs_interval_secs: 3600,
            cost_per_100_points_fen: 100,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "sqlite://huiyuan.db".into(),
            secret_key: None,
            key_file: PathBuf::from("huiyuan.key"),
            bind: "127.0.0.1".into(),
            port: 8080,
            currency: "CNY".into(),
            timezone: "Asia/Shanghai".into(),
            admin_key: None,
            loyalty: LoyaltyConfig::default(),
            webhooks: WebhookConfig::default(),
            analytics: Default::default(),
        }
    }
}

impl Config {
    /// Load from defaults, the TOML file (if it exists) and `HUIYUAN_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        let file = file.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("huiyuan.toml"));
        let mut cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(file))
            .merge(Env::prefixed("HUIYUAN_").ignore(&["SECRET_KEY", "ADMIN_KEY"]))
            .extract()
            .map_err(Box::new)?;
        // Secrets are read verbatim: figment would turn an all-digit hex key into a number.
        for (var, slot) in [("HUIYUAN_SECRET_KEY", &mut cfg.secret_key), ("HUIYUAN_ADMIN_KEY", &mut cfg.admin_key)] {
            if let Ok(v) = std::env::var(var)
                && !v.trim().is_empty()
            {
                *slot = Some(v.trim().to_string());
            }
        }
        Ok(cfg)
    }

    /// The key file that belongs next to a SQLite database (`shop.db` → `shop.key`), so each demo or
    /// embedded shop carries its own key.
    pub fn key_file_for_sqlite(url: &str) -> Option<PathBuf> {
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
        let path = path.split('?').next()?;
        if path.is_empty() || path.contains(":memory:") {
            return None;
        }
        Some(Path::new(path).with_extension("key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_databases_carry_their_own_key_file() {
        assert_eq!(Config::key_file_for_sqlite("sqlite://shop.db"), Some(PathBuf::from("shop.key")));
        assert_eq!(Config::key_file_for_sqlite("sqlite:///tmp/a/b.db?mode=rwc"), Some(PathBuf::from("/tmp/a/b.key")));
        assert_eq!(Config::key_file_for_sqlite("postgres://x"), None);
    }
}
