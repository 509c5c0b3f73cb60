//! Demo members: who they are (name, gender, birthday, city, consent, identities) and how they behave
//! (a persona plus category, brand and channel preferences).

use chrono::Duration;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::calendar::{Calendar, DAYS};
use super::catalog::{self, Catalog};
use super::stream;
use crate::members::{ConsentInput, Gender, IdentityInput, IdentityKind, MemberInput};

/// Behaviour types. Each gives recency, frequency and monetary value their own shape, so RFM, CLV and
/// clustering have real structure to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Persona {
    /// Buys often all along, premium brands, bigger baskets.
    Loyal,
    /// Buys mostly in festival sales, with coupons and discounts.
    Bargain,
    /// One order soon after signing up, then silence.
    OneTime,
    /// Active for a few months, then stops (sleeping / churned by the end).
    Lapsing,
    /// Signed up in the last three months.
    Newcomer,
    /// Browses and engages but never buys.
    Browser,
}

impl Persona {
    pub const ALL: [Persona; 6] =
        [Persona::Loyal, Persona::Bargain, Persona::OneTime, Persona::Lapsing, Persona::Newcomer, Persona::Browser];

    /// Share of the member base.
    fn share(self) -> f64 {
        match self {
            Persona::Loyal => 0.10,
            Persona::Bargain => 0.20,
            Persona::OneTime => 0.25,
            Persona::Lapsing => 0.15,
            Persona::Newcomer => 0.12,
            Persona::Browser => 0.18,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Persona::Loyal => "loyal",
            Persona::Bargain => "bargain",
            Persona::OneTime => "one_time",
            Persona::Lapsing => "lapsing",
            Persona::Newcomer => "newcomer",
            Persona::Browser => "browser",
        }
    }
}

const SURNAMES: [(&str, u32); 30] = [
    ("王", 72),
    ("李", 70),
    ("张", 66),
    ("刘", 53),
    ("陈", 46),
    ("杨", 31),
    ("黄", 25),
    ("赵", 20),
    ("吴", 20),
    ("周", 19),
    ("徐", 15),
    ("孙", 15),
    ("马", 14),
    ("朱", 13),
    ("胡", 13),
    ("郭", 12),
    ("何", 12),
    ("高", 11),
    ("林", 11),
    ("罗", 10),
    ("郑", 10),
    ("梁", 9),
    ("谢", 8),
    ("宋", 7),
    ("唐", 7),
    ("许", 6),
    ("韩", 6),
    ("冯", 6),
    ("邓", 6),
    ("欧阳", 1),
];

const FEMALE_CHARS: [&str; 24] = [
    "芳", "娜", "敏", "静", "丽", "婷", "雪", "琳", "欣", "怡", "佳", "雨", "萱", "思", "梦", "悦", "晨", "诗", "颖",
    "瑶", "璐", "倩", "蕾", "妍",
];
const MALE_CHARS: [&str; 24] = [
    "伟", "强", "磊", "军", "洋", "勇", "杰", "涛", "明", "超", "浩", "宇", "鹏", "辉", "俊", "博", "轩", "晨", "航",
    "凯", "文", "斌", "睿", "峰",
];

/// Cities weighted roughly by online shoppers.
pub const CITIES: [(&str, u32); 24] = [
    ("上海", 11),
    ("北京", 10),
    ("广州", 8),
    ("深圳", 8),
    ("杭州", 7),
    ("成都", 7),
    ("重庆", 5),
    ("武汉", 5),
    ("南京", 5),
    ("西安", 4),
    ("苏州", 4),
    ("天津", 4),
    ("长沙", 4),
    ("郑州", 3),
    ("东莞", 3),
    ("青岛", 3),
    ("宁波", 3),
    ("沈阳", 2),
    ("昆明", 2),
    ("合肥", 2),
    ("厦门", 2),
    ("福州", 2),
    ("济南", 2),
    ("哈尔滨", 2),
];

/// Registration channels and their shares.
const SIGNUP_CHANNELS: [(&str, u32); 7] =
    [("mini_program", 30), ("tmall", 20), ("jd", 10), ("douyin", 10), ("app", 10), ("web", 8), ("store", 12)];

const MAIL_DOMAINS: [&str; 5] = ["qq.com", "163.com", "126.com", "gmail.com", "outlook.com"];
const PHONE_PREFIXES: [u32; 16] = [130, 131, 132, 135, 136, 137, 138, 139, 150, 151, 152, 158, 159, 186, 187, 188];

/// One member as planned by the generator: the input for `upsert_members` plus behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberPlan {
    pub index: usize,
    pub persona: Persona,
    pub input: MemberInput,
    pub city: &'static str,
    /// Day of sign-up in the calendar.
    pub signup_day: usize,
    /// Last day this member is active (exclusive).
    pub active_until: usize,
    /// Channel the member mostly uses.
    pub channel: &'static str,
    /// Preferred leaf categories (first is the favourite).
    pub leaves: Vec<usize>,
    /// Preferred brands.
    pub brands: Vec<usize>,
    /// Price tier the member leans to (0 budget, 1 mid, 2 premium).
    pub tier: u8,
    /// Mean orders per ordinary-weight day while active.
    pub order_rate: f64,
    /// Whether they browsed anonymously before signing up (visitor id linked at sign-up).
    pub anonymous_before: bool,
}

fn weighted<'a, T>(rng: &mut impl Rng, items: &'a [(T, u32)]) -> &'a T {
    let total: u32 = items.iter().map(|(_, w)| *w).sum();
    let mut x = rng.random_range(0..total.max(1));
    for (item, w) in items {
        if x < *w {
            return item;
        }
        x -= w;
    }
    &items[items.len() - 1].0
}

fn persona_for(rng: &mut impl Rng) -> Persona {
    let mut x = rng.random::<f64>();
    for p in Persona::ALL {
        if x < p.share() {
            return p;
        }
        x -= p.share();
    }
    Persona::Browser
}

/// An identifier unique per member index and seed, so identities never collide across members.
fn token(seed: u64, index: usize, salt: u64) -> String {
    format!("{:012x}{:06x}", stream(seed, index as u64, salt) & 0xffff_ffff_ffff, index)
}

/// Plan member number `index` (0-based) of the shop. Pure and deterministic in `(seed, index)`.
pub fn plan_member(seed: u64, index: usize, cal: &Calendar, catalog: &Catalog) -> MemberPlan {
    let mut rng = ChaCha8Rng::seed_from_u64(stream(seed, index as u64, 0x3E3B));
    let persona = persona_for(&mut rng);
    let gender = match rng.random::<f64>() {
        x if x < 0.68 => Gender::Female,
        x if x < 0.95 => Gender::Male,
        _ => Gender::Unknown,
    };
    let surname = weighted(&mut rng, &SURNAMES);
    let chars = if gender == Gender::Male { &MALE_CHARS } else { &FEMALE_CHARS };
    let mut name = surname.to_string();
    for _ in 0..rng.random_range(1..=2) {
        name.push_str(chars.choose(&mut rng).unwrap_or(&"明"));
    }
    let age = 18 + (rng.random::<f64>().powf(1.4) * 40.0) as i64;
    let today = cal.date(DAYS - 1);
    let birthday = today - Duration::days(age * 365 + rng.random_range(0..365));
    let city = *weighted(&mut rng, &CITIES);
    let signup_channel = *weighted(&mut rng, &SIGNUP_CHANNELS);

    // Sign-up day and how long the member stays active, by persona.
    let (from, to) = match persona {
        Persona::Newcomer => (DAYS - 90, DAYS),
        Persona::Loyal => (0, DAYS - 150),
        Persona::Lapsing => (0, DAYS - 300),
        Persona::OneTime => (0, DAYS - 20),
        Persona::Bargain | Persona::Browser => (0, DAYS - 30),
    };
    let signup_day = cal.signup_day(&mut rng, from, to).unwrap_or(from);
    let active_until = match persona {
        Persona::Lapsing => (signup_day + rng.random_range(60..240)).min(DAYS - 180),
        Persona::OneTime => (signup_day + 14).min(DAYS),
        _ => DAYS,
    };
    let order_rate = match persona {
        Persona::Loyal => rng.random_range(1.0 / 50.0..1.0 / 20.0),
        Persona::Bargain => rng.random_range(1.0 / 80.0..1.0 / 40.0),
        Persona::Lapsing => rng.random_range(1.0 / 40.0..1.0 / 20.0),
        Persona::Newcomer => rng.random_range(1.0 / 60.0..1.0 / 25.0),
        Persona::OneTime | Persona::Browser => 0.0,
    };
    let channel = if rng.random::<f64>() < 0.8 {
        signup_channel
    } else {
        *["mini_program", "tmall", "jd", "app", "douyin", "pdd"].choose(&mut rng).unwrap_or(&"web")
    };

    // Interests: parents lean to 母婴, women to 美妆 and 服饰, men to 个护, 食品 and 服饰.
    let dept_weights: [(usize, u32); 6] = match (gender, age) {
        (_, 26..=38) if rng.random::<f64>() < 0.35 => [(0, 15), (1, 10), (2, 50), (3, 10), (4, 10), (5, 5)],
        (Gender::Female, _) => [(0, 45), (1, 12), (2, 5), (3, 13), (4, 18), (5, 7)],
        _ => [(0, 8), (1, 25), (2, 5), (3, 27), (4, 20), (5, 15)],
    };
    let first = *weighted(&mut rng, &dept_weights);
    let second = *weighted(&mut rng, &dept_weights);
    let mut leaves = Vec::new();
    for dept in [first, first, second] {
        if let Some(l) = catalog.leaves_of[dept].choose(&mut rng)
            && !leaves.contains(l)
        {
            leaves.push(*l);
        }
    }
    let tier = match persona {
        Persona::Loyal => 1 + u8::from(rng.random::<f64>() < 0.7),
        Persona::Bargain => 0,
        _ => rng.random_range(0..=2),
    };
    let mut brands: Vec<usize> = Vec::new();
    for dept in [first, second] {
        let all = catalog::brands_of(dept);
        let fitting: Vec<usize> = all.iter().copied().filter(|b| catalog::brand_tier(*b) == tier).collect();
        let pool = if fitting.is_empty() { &all } else { &fitting };
        if let Some(b) = pool.choose(&mut rng)
            && !brands.contains(b)
        {
            brands.push(*b);
        }
    }

    // Identities: everyone gives a phone; the rest depends on where they signed up.
    let suffix = (index as u64 * 7919 + stream(seed, 0, 0x9E01) % 100_000_000) % 100_000_000;
    let phone = format!("{}{:08}", PHONE_PREFIXES.choose(&mut rng).unwrap_or(&138), suffix);
    let mut identities = vec![IdentityInput::new(IdentityKind::Phone, phone)];
    if rng.random::<f64>() < 0.25 {
        let domain = MAIL_DOMAINS.choose(&mut rng).unwrap_or(&"qq.com");
        identities.push(IdentityInput::new(IdentityKind::Email, format!("hy{suffix:08}@{domain}")));
    }
    if signup_channel == "mini_program" || channel == "mini_program" || rng.random::<f64>() < 0.2 {
        identities.push(IdentityInput::new(IdentityKind::WechatOpenid, format!("oMp{}", token(seed, index, 1))));
        identities.push(IdentityInput::new(IdentityKind::WechatUnionid, format!("oUn{}", token(seed, index, 2))));
    }
    for platform in ["tmall", "jd", "douyin"] {
        if signup_channel == platform || channel == platform {
            identities.push(IdentityInput::new(
                IdentityKind::BuyerId(platform.into()),
                format!("{platform}_{}", token(seed, index, 3)),
            ));
        }
    }
    if signup_channel == "store" || channel == "store" {
        identities
            .push(IdentityInput::new(IdentityKind::StoreCard, format!("HYC{:010}", index as u64 * 37 + 1_000_000)));
    }
    let consent = ConsentInput {
        sms: Some(rng.random::<f64>() < 0.6),
        email: Some(identities.iter().any(|i| i.kind == IdentityKind::Email) && rng.random::<f64>() < 0.5),
        wechat: Some(identities.iter().any(|i| i.kind == IdentityKind::WechatOpenid) && rng.random::<f64>() < 0.8),
        push: Some(rng.random::<f64>() < 0.4),
    };
    let anonymous_before = matches!(signup_channel, "web" | "app" | "mini_program") && rng.random::<f64>() < 0.5;
    let registered_at = cal.moment(&mut rng, signup_day);
    let input = MemberInput {
        identities,
        name: Some(name),
        gender: Some(gender),
        birthday: Some(birthday).filter(|_| rng.random::<f64>() < 0.85),
        city: Some(city.to_string()),
        country: Some("CN".into()),
        registered_at: Some(registered_at),
        registration_channel: Some(signup_channel.to_string()),
        consent: Some(consent),
        referred_by: None,
    };
    MemberPlan {
        index,
        persona,
        input,
        city,
        signup_day,
        active_until,
        channel,
        leaves,
        brands,
        tier,
        order_rate,
        anonymous_before,
    }
}
