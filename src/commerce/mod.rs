//! Commerce: channels and stores (where business happens), the catalog (what is sold), orders (what was
//! bought) and refunds (what came back). Pure validation and money arithmetic; all amounts are integer
//! minor units (fen) and all times UTC.

pub mod order;
pub mod refund;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Checked, Invalid};
use crate::members::identity::is_code;
use crate::members::optional_text;
pub use order::{LineInput, LineKind, OrderDraft, OrderInput, OrderLine, OrderStatus, OrderView};
pub use refund::{RefundDraft, RefundInput, RefundLine, RefundLineInput, RefundView};

/// What kind of sales channel this is: reports group by it and identity kinds depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// The brand's own web shop or app.
    OwnedOnline,
    /// WeChat or other mini-programs (私域).
    MiniProgram,
    /// A marketplace store (Tmall, JD, Pinduoduo).
    Marketplace,
    /// Live-stream and content commerce (Douyin, Kuaishou, Xiaohongshu).
    SocialCommerce,
    /// Physical stores.
    Offline,
    Other,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::OwnedOnline => "owned_online",
            ChannelKind::MiniProgram => "mini_program",
            ChannelKind::Marketplace => "marketplace",
            ChannelKind::SocialCommerce => "social_commerce",
            ChannelKind::Offline => "offline",
            ChannelKind::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<ChannelKind> {
        [
            ChannelKind::OwnedOnline,
            ChannelKind::MiniProgram,
            ChannelKind::Marketplace,
            ChannelKind::SocialCommerce,
            ChannelKind::Offline,
            ChannelKind::Other,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A sales channel. Every order and event names one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Channel {
    pub code: String,
    pub name: String,
    pub kind: ChannelKind,
}

impl Channel {
    pub fn validate(&self) -> Checked<()> {
        if !is_code(&self.code) {
            return Err(Invalid::new(
                "invalid_code",
                "code",
                "a channel code is lower-case letters, digits and underscores",
            ));
        }
        optional_text(Some(&self.name), "name", 64)?.ok_or_else(|| Invalid::missing("name"))?;
        Ok(())
    }
}

/// The channels every shop starts with; more can be added through the API.
pub fn default_channels() -> Vec<Channel> {
    let c = |code: &str, name: &str, kind| Channel { code: code.into(), name: name.into(), kind };
    vec![
        c("web", "官网 Web shop", ChannelKind::OwnedOnline),
        c("app", "App", ChannelKind::OwnedOnline),
        c("mini_program", "微信小程序 WeChat mini-program", ChannelKind::MiniProgram),
        c("tmall", "天猫 Tmall", ChannelKind::Marketplace),
        c("jd", "京东 JD", ChannelKind::Marketplace),
        c("pdd", "拼多多 Pinduoduo", ChannelKind::Marketplace),
        c("douyin", "抖音 Douyin", ChannelKind::SocialCommerce),
        c("store", "门店 Physical stores", ChannelKind::Offline),
    ]
}

/// A physical store (or any sub-location of a channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoreLocation {
    pub code: String,
    pub channel: String,
    pub name: String,
    pub city: Option<String>,
}

impl StoreLocation {
    pub fn validate(&self) -> Checked<()> {
        if !is_code(&self.code) {
            return Err(Invalid::new(
                "invalid_code",
                "code",
                "a store code is lower-case letters, digits and underscores",
            ));
        }
        if !is_code(&self.channel) {
            return Err(Invalid::new("invalid_code", "channel", "unknown channel code"));
        }
        optional_text(Some(&self.name), "name", 64)?.ok_or_else(|| Invalid::missing("name"))?;
        optional_text(self.city.as_deref(), "city", 64)?;
        Ok(())
    }
}

/// A catalog entry. `category_path` is `/`-separated from the root (`美妆/护肤/面霜`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Sku {
    pub sku: String,
    pub name: String,
    pub category_path: Option<String>,
    pub brand: Option<String>,
    /// List price in minor units.
    pub list_price: i64,
    pub available: bool,
}

impl Sku {
    pub fn validate(&self) -> Checked<()> {
        validate_sku_code(&self.sku, "sku")?;
        optional_text(Some(&self.name), "name", 200)?.ok_or_else(|| Invalid::missing("name"))?;
        optional_text(self.category_path.as_deref(), "category_path", 200)?;
        optional_text(self.brand.as_deref(), "brand", 100)?;
        if self.list_price < 0 {
            return Err(Invalid::new("out_of_range", "list_price", "list_price must not be negative"));
        }
        Ok(())
    }
}

/// SKU codes are the shop's own; anything printable up to 64 characters.
pub fn validate_sku_code(sku: &str, field: &str) -> Checked<()> {
    if sku.trim().is_empty() || sku.len() > 64 || sku.chars().any(char::is_control) || sku != sku.trim() {
        return Err(Invalid::new(
            "invalid_sku",
            field,
            "sku must be 1 to 64 printable characters without surrounding spaces",
        ));
    }
    Ok(())
}

/// Reference numbers (order_no, refund_no) from the channel: printable, at most 64 characters.
pub fn validate_reference(v: &str, field: &str) -> Checked<()> {
    if v.trim().is_empty() || v.len() > 64 || v.chars().any(char::is_control) {
        return Err(Invalid::new(
            "invalid_reference",
            field,
            format!("`{field}` must be 1 to 64 printable characters"),
        ));
    }
    Ok(())
}

/// ISO 4217 code, upper-case letters.
pub fn validate_currency(c: &str) -> Checked<()> {
    if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Invalid::new(
            "invalid_currency",
            "currency",
            "currency is a three-letter ISO 4217 code such as CNY",
        ));
    }
    Ok(())
}
