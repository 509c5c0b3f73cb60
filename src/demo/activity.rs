//! What demo members (and guests) do: orders with seasonality, discounts and coupons, refunds on about
//! one order in twenty, and behaviour events around them (purchase funnels, browsing that drops off,
//! check-in streaks, campaign opens and clicks, anonymous browsing later linked at sign-up).

use chrono::{DateTime, Duration, Utc};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use serde_json::{Map, Value, json};

use super::calendar::DAYS;
use super::catalog::{self, DEPARTMENTS};
use super::people::{MemberPlan, Persona};
use super::{Shop, stream};
use crate::commerce::{LineInput, LineKind, OrderInput, OrderStatus, RefundInput, RefundLineInput};
use crate::events::EventInput;
use crate::members::MemberId;

/// Everything one member (or one guest slot) contributes, in the order it must be written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    pub orders: Vec<OrderInput>,
    /// Refunds of the orders above, referenced by `order_no`.
    pub refunds: Vec<RefundInput>,
    /// Events of visitors not (yet) known; written before `events` so a later log-in adopts them.
    pub anonymous_events: Vec<EventInput>,
    pub events: Vec<EventInput>,
}

const REFUND_REASONS: [&str; 7] = ["七天无理由退货", "尺码不合适", "不喜欢", "质量问题", "发错货", "过敏", "物流太慢"];
const EXTRA_QUERIES: [&str; 10] = [
    "敏感肌 面霜",
    "618 优惠",
    "双十一 囤货",
    "新品",
    "礼盒 送女友",
    "会员 专享",
    "学生党 平价",
    "大牌 小样",
    "婴儿 奶粉 1段",
    "男士 护肤",
];
const MEDIA: [&str; 3] = ["sms", "wechat", "push"];

fn poisson(rng: &mut impl Rng, mean: f64) -> usize {
    if mean <= 0.0 {
        return 0;
    }
    Poisson::new(mean).map(|p| p.sample(rng) as usize).unwrap_or(0)
}

fn order_prefix(channel: &str) -> &'static str {
    match channel {
        "web" => "W",
        "app" => "A",
        "mini_program" => "MP",
        "tmall" => "TM",
        "jd" => "JD",
        "pdd" => "PDD",
        "douyin" => "DY",
        _ => "S",
    }
}

fn is_online(channel: &str) -> bool {
    channel != "store"
}

/// Builds one actor's events with unique ids and a session counter.
struct Events {
    prefix: String,
    member: Option<MemberId>,
    anonymous_id: Option<String>,
    next: usize,
    sessions: usize,
    out: Vec<EventInput>,
}

impl Events {
    fn new(prefix: String, member: Option<MemberId>, anonymous_id: Option<String>) -> Self {
        Events { prefix, member, anonymous_id, next: 0, sessions: 0, out: Vec::new() }
    }

    fn session(&mut self) -> String {
        self.sessions += 1;
        format!("{}-s{}", self.prefix, self.sessions)
    }

    fn push(
        &mut self,
        kind: &str,
        at: DateTime<Utc>,
        session: Option<&str>,
        channel: &str,
        sku: Option<&str>,
        props: Value,
    ) {
        self.next += 1;
        let properties = match props {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        self.out.push(EventInput {
            event_type: kind.to_string(),
            occurred_at: at,
            member_id: self.member,
            identity: None,
            anonymous_id: self.anonymous_id.clone(),
            session_id: session.map(str::to_string),
            channel: Some(channel.to_string()),
            sku: sku.map(str::to_string),
            event_id: Some(format!("{}-{}", self.prefix, self.next)),
            properties,
        });
    }
}

fn landing_url(shop: &Shop, day: usize, leaf: usize) -> String {
    let date = shop.calendar.date(day);
    if shop.calendar.is_sale(day) {
        let sale = match chrono::Datelike::month(&date) {
            6 => "618",
            10 | 11 => "1111",
            12 => "1212",
            3 => "38",
            _ => "festival",
        };
        format!("/activity/{sale}")
    } else {
        format!("/category/{}", DEPARTMENTS[catalog::department_of(leaf)])
    }
}

fn search_query(rng: &mut impl Rng, leaf: usize, brand: Option<usize>) -> String {
    match rng.random_range(0..4) {
        0 => EXTRA_QUERIES.choose(rng).unwrap_or(&"新品").to_string(),
        1 => match brand {
            Some(b) => format!("{} {}", catalog::brand_name(b), catalog::leaf_name(leaf)),
            None => catalog::search_words(leaf).to_string(),
        },
        _ => catalog::search_words(leaf).to_string(),
    }
}

/// Pick an item in `leaf`, preferring the member's brands and price tier.
fn pick_item(shop: &Shop, rng: &mut impl Rng, leaf: usize, brands: &[usize], tier: Option<u8>) -> Option<usize> {
    let items = &shop.catalog.by_leaf[leaf];
    let mut best: Option<(u32, usize)> = None;
    for _ in 0..4 {
        let i = *items.choose(rng)?;
        let it = &shop.catalog.items[i];
        let score =
            2 * u32::from(brands.contains(&it.brand)) + u32::from(Some(it.tier) == tier) + rng.random_range(0..2);
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, i));
        }
    }
    best.map(|(_, i)| i)
}

/// A shopper's taste, for picking lines.
struct Taste<'a> {
    leaves: &'a [usize],
    brands: &'a [usize],
    tier: Option<u8>,
    big_baskets: bool,
    deal_seeker: bool,
}

/// One planned order with the facts its events and refund need.
struct Planned {
    input: OrderInput,
    /// Leaf category of the first line: what the shopper came looking for.
    leaf: usize,
    total: i64,
}

#[allow(clippy::too_many_arguments)]
fn plan_order(
    shop: &Shop,
    rng: &mut impl Rng,
    taste: &Taste,
    member: Option<MemberId>,
    channel: &str,
    store: Option<String>,
    day: usize,
    placed_at: DateTime<Utc>,
    order_no: String,
    first_order: bool,
) -> Option<Planned> {
    let n_lines = match (taste.big_baskets, rng.random::<f64>()) {
        (true, x) if x < 0.35 => 1,
        (true, x) if x < 0.7 => 2,
        (true, x) if x < 0.88 => 3,
        (true, _) => 4,
        (false, x) if x < 0.62 => 1,
        (false, x) if x < 0.9 => 2,
        (false, x) if x < 0.97 => 3,
        (false, _) => 4,
    };
    let sale = shop.calendar.is_sale(day);
    let mut lines: Vec<LineInput> = Vec::with_capacity(n_lines);
    let mut first_leaf = None;
    for _ in 0..n_lines {
        let leaf = match taste.leaves.choose(rng) {
            Some(l) if rng.random::<f64>() < 0.75 => *l,
            _ => rng.random_range(0..shop.catalog.by_leaf.len()),
        };
        let Some(i) = pick_item(shop, rng, leaf, taste.brands, taste.tier) else {
            continue;
        };
        let item = &shop.catalog.items[i];
        if lines.iter().any(|l| l.sku == item.sku) {
            continue;
        }
        first_leaf.get_or_insert(leaf);
        let quantity = match rng.random::<f64>() {
            x if x < 0.75 => 1,
            x if x < 0.93 => 2,
            _ => 3,
        };
        let gross = item.list_price * quantity;
        let (p, lo, hi) = match (sale, taste.deal_seeker) {
            (true, true) => (0.9, 0.15, 0.35),
            (true, false) => (0.5, 0.05, 0.2),
            (false, true) => (0.35, 0.05, 0.15),
            (false, false) => (0.12, 0.05, 0.1),
        };
        let discount =
            if rng.random::<f64>() < p { ((gross as f64 * rng.random_range(lo..hi)) as i64 / 100) * 100 } else { 0 };
        lines.push(LineInput {
            sku: item.sku.clone(),
            quantity,
            unit_price: item.list_price,
            discount: discount.min(gross),
            kind: LineKind::Product,
            name: None,
            category_path: None,
            brand: None,
        });
    }
    if lines.is_empty() {
        return None;
    }
    let net: i64 = lines.iter().map(|l| l.quantity * l.unit_price - l.discount).sum();
    let coupon_p = match (sale, taste.deal_seeker) {
        (true, true) => 0.75,
        (true, false) => 0.3,
        (false, true) => 0.3,
        (false, false) => 0.06,
    };
    let campaign = if sale { "FEST" } else { "DAILY" };
    let (coupon_code, order_discount) = if rng.random::<f64>() < coupon_p {
        match net {
            n if n >= 30_000 => (Some(format!("{campaign}-MJ300-30")), 3_000),
            n if n >= 20_000 => (Some(format!("{campaign}-MJ200-20")), 2_000),
            n if n >= 9_900 => (Some(format!("{campaign}-MJ99-10")), 1_000),
            _ if first_order => (Some("NEW-MEMBER-5".to_string()), 500.min(net)),
            _ => (None, 0),
        }
    } else if first_order && member.is_some() && rng.random::<f64>() < 0.3 {
        (Some("NEW-MEMBER-5".to_string()), 500.min(net))
    } else {
        (None, 0)
    };
    let shipping_fee = match channel {
        "store" => 0,
        _ if net - order_discount >= 9_900 => 0,
        "jd" | "tmall" | "pdd" | "douyin" => 600,
        _ => 800,
    };
    let status = match DAYS - day {
        0..=3 => OrderStatus::Paid,
        4..=10 => OrderStatus::Shipped,
        _ => OrderStatus::Completed,
    };
    let total = net - order_discount + shipping_fee;
    Some(Planned {
        input: OrderInput {
            channel: channel.to_string(),
            order_no,
            store,
            member_id: member,
            identity: None,
            status,
            placed_at,
            paid_at: Some(placed_at + Duration::seconds(rng.random_range(20..900))),
            currency: None,
            lines,
            shipping_fee,
            order_discount,
            coupon_code,
            total: Some(total),
        },
        leaf: first_leaf.unwrap_or(0),
        total,
    })
}

/// A refund of about one order in twenty: whole, or part of one line.
fn plan_refund(shop: &Shop, rng: &mut impl Rng, o: &Planned, chance: f64) -> Option<RefundInput> {
    if o.input.status == OrderStatus::Paid || rng.random::<f64>() >= chance {
        return None;
    }
    let refunded_at = o.input.placed_at + Duration::hours(rng.random_range(30..24 * 15));
    if refunded_at >= shop.calendar.horizon() {
        return None;
    }
    let whole = rng.random::<f64>() < 0.5
        || o.input.lines.len() == 1 && o.input.lines[0].quantity == 1 && rng.random::<f64>() < 0.5;
    let (lines, shipping_refund) = if whole {
        (Vec::new(), if rng.random::<f64>() < 0.5 { o.input.shipping_fee } else { 0 })
    } else {
        let i = rng.random_range(0..o.input.lines.len());
        let q = o.input.lines[i].quantity;
        (vec![RefundLineInput { line_no: i as i32 + 1, quantity: rng.random_range(1..=q), amount: None }], 0)
    };
    Some(RefundInput {
        channel: o.input.channel.clone(),
        refund_no: format!("R{}", o.input.order_no),
        order_id: None,
        order_no: Some(o.input.order_no.clone()),
        refunded_at,
        lines,
        shipping_refund,
        reason: REFUND_REASONS.choose(rng).map(|r| (*r).to_string()),
    })
}

/// Events of a shopping session on `day` that ends by `end` in `order` (or drops off when `order` is
/// `None`).
#[allow(clippy::too_many_arguments)]
fn session(
    shop: &Shop,
    r: &mut ChaCha8Rng,
    ev: &mut Events,
    taste: &Taste,
    channel: &str,
    day: usize,
    end: DateTime<Utc>,
    order: Option<&Planned>,
) {
    let sid = ev.session();
    let leaf = order.map(|o| o.leaf).or_else(|| taste.leaves.choose(r).copied()).unwrap_or(0);
    // At most a dozen steps of up to two minutes each, so the session ends before `end`.
    let mut t = end - Duration::seconds(r.random_range(1500..3600));
    let step = |r: &mut ChaCha8Rng, t: &mut DateTime<Utc>| {
        *t += Duration::seconds(r.random_range(5..120));
    };
    // A third of purchases come straight from the cart or favourites: no landing page, no search.
    let direct = order.is_some() && r.random::<f64>() < 0.35;
    if !direct {
        ev.push("page_view", t, Some(&sid), channel, None, json!({ "url": landing_url(shop, day, leaf) }));
        step(r, &mut t);
        if r.random::<f64>() < 0.55 {
            let brand = taste.brands.first().copied();
            ev.push("search", t, Some(&sid), channel, None, json!({ "query": search_query(r, leaf, brand) }));
            step(r, &mut t);
        }
    }
    match order {
        Some(o) => {
            for _ in 0..r.random_range(0..2) {
                if let Some(i) = pick_item(shop, r, leaf, taste.brands, taste.tier) {
                    ev.push("product_view", t, Some(&sid), channel, Some(&shop.catalog.items[i].sku), json!({}));
                    step(r, &mut t);
                }
            }
            for l in &o.input.lines {
                ev.push("product_view", t, Some(&sid), channel, Some(&l.sku), json!({}));
                step(r, &mut t);
                ev.push("add_to_cart", t, Some(&sid), channel, Some(&l.sku), json!({ "quantity": l.quantity }));
                step(r, &mut t);
            }
            let at = o.input.placed_at;
            ev.push(
                "checkout",
                at - Duration::seconds(30),
                Some(&sid),
                channel,
                None,
                json!({ "items": o.input.lines.len() }),
            );
            ev.push(
                "purchase",
                at,
                Some(&sid),
                channel,
                None,
                json!({ "order_no": o.input.order_no, "amount": o.total }),
            );
            if r.random::<f64>() < 0.08 {
                let sku = &o.input.lines[0].sku;
                ev.push(
                    "share",
                    at + Duration::seconds(60),
                    Some(&sid),
                    channel,
                    Some(sku),
                    json!({ "to": "wechat_friend" }),
                );
            }
        }
        None => {
            let mut viewed = Vec::new();
            for _ in 0..r.random_range(1..=3) {
                if let Some(i) = pick_item(shop, r, leaf, taste.brands, taste.tier) {
                    let sku = shop.catalog.items[i].sku.clone();
                    ev.push("product_view", t, Some(&sid), channel, Some(&sku), json!({}));
                    step(r, &mut t);
                    viewed.push(sku);
                }
            }
            if let Some(sku) = viewed.last().filter(|_| r.random::<f64>() < 0.3) {
                ev.push("add_to_cart", t, Some(&sid), channel, Some(sku), json!({ "quantity": 1 }));
                step(r, &mut t);
                if r.random::<f64>() < 0.35 {
                    ev.push("checkout", t, Some(&sid), channel, None, json!({ "items": 1 }));
                }
            }
            if let Some(sku) = viewed.first().filter(|_| r.random::<f64>() < 0.04) {
                ev.push("share", t, Some(&sid), channel, Some(sku), json!({ "to": "wechat_moments" }));
            }
        }
    }
}

/// Browsing sessions per active day, by persona.
fn browse_rate(p: Persona) -> f64 {
    match p {
        Persona::Loyal => 1.0 / 90.0,
        Persona::Bargain => 1.0 / 120.0,
        Persona::OneTime => 1.0 / 200.0,
        Persona::Lapsing => 1.0 / 70.0,
        Persona::Newcomer => 1.0 / 20.0,
        Persona::Browser => 1.0 / 40.0,
    }
}

/// The activity of planned member `plan`, stored as `member`. Pure and deterministic in the seed and index.
/// A review as a member writes it. `skin` (0–9, fixed per member; 9 for goods that are not skin or body
/// care) decides what they mention: 0–2 sensitive skin, 3–4 oily skin, the rest neither (one of those phrasings is a negation the keyword tagger must not
/// read as sensitive skin); one review in ten says the order was a gift.
fn review_text(rng: &mut impl Rng, skin: u64) -> String {
    let pool: &[&str] = match skin {
        0..=2 => &["敏感肌用着不刺激，会回购", "皮肤敏感，这款很温和", "容易过敏的体质，用了一周没有泛红"],
        3..=4 => &["油皮夏天用很清爽", "出油多，控油效果不错", "油性皮肤也不闷痘"],
        _ => &["包装很好，物流很快", "味道不错，性价比高", "不是敏感肌，没什么特别感觉", "和描述一致，满意"],
    };
    let mut text = pool.choose(rng).copied().unwrap_or("满意").to_string();
    if rng.random::<f64>() < 0.1 {
        text.push_str("，买来送礼的，朋友很喜欢");
    }
    text
}

pub fn member_activity(shop: &Shop, plan: &MemberPlan, member: MemberId) -> Activity {
    let mut rng = ChaCha8Rng::seed_from_u64(stream(shop.seed, plan.index as u64, 0xAC71));
    let cal = &shop.calendar;
    let persona = plan.persona;
    let registered_at = plan.input.registered_at.unwrap_or_else(|| cal.at(plan.signup_day, 0));
    let taste = Taste {
        leaves: &plan.leaves,
        brands: &plan.brands,
        tier: Some(plan.tier),
        big_baskets: persona == Persona::Loyal,
        deal_seeker: persona == Persona::Bargain,
    };

    // Order days.
    let (from, until) = (plan.signup_day, plan.active_until.min(DAYS));
    let mut days: Vec<usize> = match persona {
        Persona::Browser => Vec::new(),
        Persona::OneTime => cal.everyday(&mut rng, from, until).into_iter().collect(),
        Persona::Bargain => {
            let n = poisson(&mut rng, plan.order_rate * (until - from) as f64).max(1);
            (0..n).filter_map(|_| cal.deal_day(&mut rng, from, until)).collect()
        }
        _ => {
            let n = poisson(&mut rng, plan.order_rate * cal.mass(from, until));
            let mut d: Vec<usize> = (0..n).filter_map(|_| cal.everyday(&mut rng, from, until)).collect();
            // Most people who buy at all buy soon after signing up.
            if persona != Persona::Newcomer || rng.random::<f64>() < 0.8 {
                d.extend(cal.everyday(&mut rng, from, (from + 10).min(until)));
            }
            d
        }
    };
    days.sort_unstable();

    let mut out = Activity::default();
    let mut ev = Events::new(format!("demo-{}", plan.index), Some(member), None);
    let refund_chance = match persona {
        Persona::Bargain => 0.07,
        Persona::Loyal => 0.035,
        _ => 0.05,
    };
    for (k, day) in days.iter().enumerate() {
        let channel = match rng.random::<f64>() {
            x if x < 0.8 => plan.channel,
            x if x < 0.9 && persona == Persona::Bargain => "pdd",
            _ => ["mini_program", "tmall", "jd", "app", "web", "douyin"].choose(&mut rng).copied().unwrap_or("web"),
        };
        let store = (channel == "store").then(|| shop.catalog.store_for(plan.city, plan.index).code.clone());
        let mut placed_at = cal.moment(&mut rng, *day);
        if placed_at <= registered_at {
            placed_at = registered_at + Duration::minutes(rng.random_range(5..90));
        }
        if placed_at >= cal.horizon() {
            continue;
        }
        let order_no = format!("{}{}{:07}{:03}", order_prefix(channel), cal.date(*day).format("%Y%m%d"), plan.index, k);
        let Some(o) =
            plan_order(shop, &mut rng, &taste, Some(member), channel, store, *day, placed_at, order_no, k == 0)
        else {
            continue;
        };
        if is_online(channel) {
            session(shop, &mut rng, &mut ev, &taste, channel, *day, placed_at, Some(&o));
        } else {
            ev.push(
                "purchase",
                placed_at,
                None,
                channel,
                None,
                json!({ "order_no": o.input.order_no, "amount": o.total }),
            );
        }
        out.refunds.extend(plan_refund(shop, &mut rng, &o, refund_chance));
        // Some online buyers review the order a few days later (评价), in their own words.
        if is_online(channel) && rng.random::<f64>() < 0.15 {
            let at = placed_at + Duration::hours(rng.random_range(36..144));
            if at < cal.horizon() {
                let skin_care = catalog::department_of(o.leaf) <= 1;
                let skin = if skin_care { stream(shop.seed, plan.index as u64, 0x5C1A) % 10 } else { 9 };
                let text = review_text(&mut rng, skin);
                let sku = o.input.lines.first().map(|l| l.sku.clone());
                let props = json!({ "order_no": o.input.order_no, "rating": rng.random_range(3..=5), "text": text });
                ev.push("custom.review", at, None, channel, sku.as_deref(), props);
            }
        }
        out.orders.push(o.input);
    }

    // Anonymous browsing before sign-up, linked by the first identified event.
    let online = if is_online(plan.channel) { plan.channel } else { "mini_program" };
    if plan.anonymous_before {
        let anon = format!("anon-{:016x}", stream(shop.seed, plan.index as u64, 0xA707));
        let mut visitor = Events::new(format!("demo-{}-a", plan.index), None, Some(anon.clone()));
        for _ in 0..rng.random_range(1..=3) {
            let day = plan.signup_day.saturating_sub(rng.random_range(0..8));
            let end = cal.moment(&mut rng, day).min(registered_at - Duration::minutes(5));
            session(shop, &mut rng, &mut visitor, &taste, online, day, end, None);
        }
        out.anonymous_events = visitor.out;
        ev.anonymous_id = Some(anon);
        ev.push("page_view", registered_at, None, online, None, json!({ "url": "/member/register" }));
        ev.anonymous_id = None;
    }

    // Browsing that does not end in a purchase.
    let engaged_until = match persona {
        Persona::Lapsing => (until + 45).min(DAYS),
        Persona::OneTime => (from + 60).min(DAYS),
        _ => DAYS,
    };
    let n = poisson(&mut rng, browse_rate(persona) * (engaged_until - from) as f64);
    for _ in 0..n {
        let Some(day) = cal.everyday(&mut rng, from, engaged_until) else {
            continue;
        };
        let end = cal.moment(&mut rng, day).max(registered_at + Duration::minutes(1));
        if end < cal.horizon() {
            session(shop, &mut rng, &mut ev, &taste, online, day, end, None);
        }
    }

    // Check-in streaks (签到) in the app or mini-program.
    let streaks = match persona {
        Persona::Loyal => 3.5,
        Persona::Newcomer | Persona::Browser => 2.0,
        Persona::Bargain | Persona::Lapsing => 1.5,
        Persona::OneTime => 0.3,
    } * if matches!(plan.channel, "app" | "mini_program") { 1.0 } else { 0.3 };
    let check_in_channel = if plan.channel == "app" { "app" } else { "mini_program" };
    for _ in 0..poisson(&mut rng, streaks) {
        if engaged_until <= from {
            break;
        }
        let start = rng.random_range(from..engaged_until);
        for d in start..(start + rng.random_range(1..=7)).min(engaged_until) {
            let at = cal.at(d, rng.random_range(7 * 3600..23 * 3600)).max(registered_at + Duration::minutes(1));
            if at < cal.horizon() {
                ev.push("check_in", at, None, check_in_channel, None, json!({}));
            }
        }
    }

    // Campaigns reach members who consented to some medium.
    let consent = plan.input.consent.unwrap_or_default();
    let media: Vec<&str> = MEDIA
        .iter()
        .copied()
        .filter(|m| match *m {
            "sms" => consent.sms == Some(true),
            "wechat" => consent.wechat == Some(true),
            _ => consent.push == Some(true),
        })
        .collect();
    if !media.is_empty() {
        for c in cal.campaigns.iter().filter(|c| c.day > from) {
            let open = match persona {
                Persona::Loyal => 0.3,
                Persona::Bargain => 0.4,
                Persona::Newcomer => 0.3,
                Persona::Browser => 0.2,
                Persona::Lapsing if c.day < until + 60 => 0.2,
                Persona::Lapsing | Persona::OneTime => 0.04,
            };
            if rng.random::<f64>() >= open {
                continue;
            }
            let medium = media.choose(&mut rng).copied().unwrap_or("sms");
            let at = cal.at(c.day, rng.random_range(10 * 3600..22 * 3600));
            ev.push("campaign_open", at, None, online, None, json!({ "campaign_id": c.id, "medium": medium }));
            let click = if persona == Persona::Bargain { 0.55 } else { 0.3 };
            if rng.random::<f64>() < click {
                let url = format!("/campaign/{}", c.id);
                ev.push(
                    "campaign_click",
                    at + Duration::seconds(rng.random_range(5..600)),
                    None,
                    online,
                    None,
                    json!({ "campaign_id": c.id, "url": url }),
                );
            }
        }
    }
    out.events = ev.out;
    out
}

/// Guest slot `index`: orders without a member and visitors who never sign up.
pub fn guest_activity(shop: &Shop, index: usize) -> Activity {
    let mut rng = ChaCha8Rng::seed_from_u64(stream(shop.seed, index as u64, 0x6E57));
    let cal = &shop.calendar;
    let mut out = Activity::default();
    let all_leaves: Vec<usize> = (0..shop.catalog.by_leaf.len()).collect();
    let taste = Taste { leaves: &all_leaves, brands: &[], tier: None, big_baskets: false, deal_seeker: false };
    for k in 0..poisson(&mut rng, 0.55) {
        let Some(day) = cal.everyday(&mut rng, 0, DAYS) else {
            continue;
        };
        let channel = match rng.random_range(0..100) {
            0..25 => "pdd",
            25..45 => "tmall",
            45..65 => "jd",
            65..80 => "douyin",
            80..95 => "store",
            _ => "web",
        };
        let store = (channel == "store")
            .then(|| shop.catalog.stores[rng.random_range(0..shop.catalog.stores.len())].code.clone());
        let placed_at = cal.moment(&mut rng, day);
        let order_no = format!("{}{}G{:07}{:02}", order_prefix(channel), cal.date(day).format("%Y%m%d"), index, k);
        if let Some(o) = plan_order(shop, &mut rng, &taste, None, channel, store, day, placed_at, order_no, false) {
            out.refunds.extend(plan_refund(shop, &mut rng, &o, 0.05));
            out.orders.push(o.input);
        }
    }
    for v in 0..poisson(&mut rng, 0.3) {
        let anon = format!("anon-g{:016x}{v}", stream(shop.seed, index as u64, 0xA70C));
        let mut visitor = Events::new(format!("demo-g{index}-{v}"), None, Some(anon));
        for _ in 0..rng.random_range(1..=3) {
            let Some(day) = cal.everyday(&mut rng, 0, DAYS) else {
                continue;
            };
            let end = cal.moment(&mut rng, day);
            session(shop, &mut rng, &mut visitor, &taste, "web", day, end, None);
        }
        out.anonymous_events.extend(visitor.out);
    }
    out
}
