use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;

const MEMBER: MemberId = 42;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("test instant").with_timezone(&Utc)
}

/// When the test coupons are issued: 2026-10-31 12:00 in Shanghai.
fn issued() -> DateTime<Utc> {
    t("2026-10-31T12:00:00+08:00")
}

/// When the test carts are priced: 2026-11-01 12:00 in Shanghai, inside every example window.
fn now() -> DateTime<Utc> {
    t("2026-11-01T12:00:00+08:00")
}

fn example() -> Vec<CouponTemplate> {
    templates_from_toml(EXAMPLE_TOML).expect("example templates are valid")
}

fn template(id: &str) -> CouponTemplate {
    example().into_iter().find(|t| t.id == id).unwrap_or_else(|| panic!("no example template {id}"))
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn coupon(tpl: &CouponTemplate, seed: u64) -> Coupon {
    issue(tpl, MEMBER, 0, 0, issued(), &mut rng(seed)).expect("issued")
}

fn line(line_no: i32, sku: &str, category: &str, quantity: i64, unit_price: i64) -> CartLine {
    CartLine {
        line_no,
        sku: sku.to_string(),
        category_path: Some(category.to_string()),
        quantity,
        unit_price,
        amount: quantity * unit_price,
    }
}

fn cart(channel: &str, lines: Vec<CartLine>, shipping_fee: i64) -> Cart {
    Cart { member_id: MEMBER, channel: channel.to_string(), lines, shipping_fee }
}

fn quote_at(cart: &Cart, coupons: &[(&Coupon, &CouponTemplate)], at: DateTime<Utc>) -> Quote {
    let q = price(cart, coupons, at).expect("valid cart");
    assert_consistent(cart, coupons, &q);
    q
}

fn quote(cart: &Cart, coupons: &[(&Coupon, &CouponTemplate)]) -> Quote {
    quote_at(cart, coupons, now())
}

/// The invariants every quote keeps; checked on every quote of these tests.
fn assert_consistent(cart: &Cart, coupons: &[(&Coupon, &CouponTemplate)], q: &Quote) {
    assert_eq!(q.lines.len(), cart.lines.len());
    assert_eq!(q.applied.len() + q.not_applied.len(), coupons.len());
    assert_eq!(q.lines.iter().map(|l| l.discount).sum::<i64>(), q.total_discount);
    assert_eq!(q.applied.iter().map(|a| a.discount).sum::<i64>(), q.total_discount);
    for a in &q.applied {
        assert_eq!(a.lines.iter().map(|l| l.discount).sum::<i64>(), a.discount, "{a:?}");
        assert!(a.lines.iter().all(|l| l.discount > 0));
    }
    for l in &q.lines {
        assert!(0 <= l.discount && l.discount <= l.amount, "{l:?}");
        assert_eq!(l.payable, l.amount - l.discount);
    }
    assert_eq!(q.subtotal, cart.lines.iter().map(|l| l.amount).sum::<i64>());
    assert_eq!(q.payable, q.subtotal - q.total_discount + q.shipping_fee - q.shipping_waived);
    assert!(q.payable >= 0);
}

fn only_reason(q: &Quote) -> (&Reason, &str) {
    assert_eq!(q.not_applied.len(), 1, "{:#?}", q.not_applied);
    (&q.not_applied[0].reason, q.not_applied[0].message.as_str())
}

fn shares(q: &Quote) -> Vec<i64> {
    q.lines.iter().map(|l| l.discount).collect()
}

// ---------------------------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------------------------

#[test]
fn example_templates_parse() {
    let all = example();
    let ids: Vec<&str> = all.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["full200-minus30", "ten-percent-off", "tea-second-half", "free-shipping-99", "gift-over-299"]);
    let full = &all[0];
    assert_eq!(full.name, "满200减30");
    assert_eq!(full.benefit, Benefit::AmountOff { threshold: 20_000, amount_off: 3_000 });
    assert_eq!(full.total_quantity, Some(50_000));
    assert!(!full.stackable);
    assert_eq!(full.validity, Validity::Fixed { start: t("2026-10-19T16:00:00Z"), end: t("2026-11-11T16:00:00Z") });
    assert_eq!(all[1].benefit, Benefit::PercentOff { off_bp: 1_000, max_discount: Some(5_000), threshold: 0 });
    assert_eq!(all[1].validity, Validity::DaysFromIssue { days: 30 });
    assert_eq!(all[1].per_member_limit, 2);
    assert_eq!(all[2].benefit, Benefit::NthItem { n: 2, off_bp: 5_000, max_units: None });
    assert!(all[2].stackable);
    assert_eq!(all[3].benefit, Benefit::FreeShipping { threshold: 9_900 });
    assert_eq!(all[3].scope, Scope::default());
    assert_eq!(
        all[4].benefit,
        Benefit::FreeGift { gift_sku: "SKIN-TONER-30ML".into(), gift_quantity: 1, threshold: 29_900 }
    );
    assert_eq!(all[4].time_zone, chrono_tz::Asia::Shanghai);
    assert_eq!(all.iter().map(|t| t.benefit.kind()).collect::<BTreeSet<_>>().len(), 5, "every kind");
}

#[test]
fn templates_round_trip_through_json() {
    for tpl in example() {
        let json = serde_json::to_string(&tpl).unwrap();
        assert_eq!(CouponTemplate::from_json(&json).unwrap(), tpl);
    }
}

fn invalid_field(text: &str) -> (String, &'static str) {
    match templates_from_toml(text) {
        Err(TemplateError::Invalid(e)) => (e.field, e.code),
        other => panic!("expected an invalid template, got {other:?}"),
    }
}

const MINIMAL: &str = r#"
[[templates]]
id = "ok"
name = "ok"
benefit = { kind = "amount_off", threshold = 100, amount_off = 10 }
validity = { kind = "days_from_issue", days = 1 }
"#;

#[test]
fn validation_names_the_field() {
    let second = |extra: &str| format!("{MINIMAL}\n[[templates]]\n{extra}");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            second(
                r#"id = "pct"
name = "9折"
benefit = { kind = "percent_off", off_bp = 0 }
validity = { kind = "days_from_issue", days = 1 }"#,
            ),
            "templates[1].benefit.off_bp",
            "out_of_range",
        ),
        (
            second(
                r#"id = "pct"
name = "11折"
benefit = { kind = "percent_off", off_bp = 10001 }
validity = { kind = "days_from_issue", days = 1 }"#,
            ),
            "templates[1].benefit.off_bp",
            "out_of_range",
        ),
        (
            second(
                r#"id = "ok"
name = "twice"
benefit = { kind = "free_shipping" }
validity = { kind = "days_from_issue", days = 1 }"#,
            ),
            "templates[1].id",
            "duplicate",
        ),
        (
            second(
                r#"id = "Bad Id"
name = "x"
benefit = { kind = "free_shipping" }
validity = { kind = "days_from_issue", days = 1 }"#,
            ),
            "templates[1].id",
            "invalid_code",
        ),
        (
            second(
                r#"id = "noname"
name = "  "
benefit = { kind = "free_shipping" }
validity = { kind = "days_from_issue", days = 1 }"#,
            ),
            "templates[1].name",
            "missing_field",
        ),
        (
            second(
                r#"id = "window"
name = "x"
benefit = { kind = "free_shipping" }
validity = { kind = "fixed", start = "2026-11-01T00:00:00+08:00", end = "2026-11-01T00:00:00+08:00" }"#,
            ),
            "templates[1].validity.end",
            "out_of_range",
        ),
        (
            second(
                r#"id = "days"
name = "x"
benefit = { kind = "free_shipping" }
validity = { kind = "days_from_issue", days = 0 }"#,
            ),
            "templates[1].validity.days",
            "out_of_range",
        ),
        (
            second(
                r#"id = "nth"
name = "x"
benefit = { kind = "nth_item", n = 1, off_bp = 5000 }
validity = { kind = "days_from_issue", days = 1 }"#,
            ),
            "templates[1].benefit.n",
            "out_of_range",
        ),
        (
            second(
                r#"id = "conflict"
name = "x"
benefit = { kind = "free_shipping" }
validity = { kind = "days_from_issue", days = 1 }
scope = { skus = ["A", "B"], excluded_skus = ["B"] }"#,
            ),
            "templates[1].scope.skus[1]",
            "conflict",
        ),
        (
            second(
                r#"id = "blank"
name = "x"
benefit = { kind = "free_shipping" }
validity = { kind = "days_from_issue", days = 1 }
scope = { categories = ["茶饮", ""] }"#,
            ),
            "templates[1].scope.categories[1]",
            "missing_field",
        ),
        (
            second(
                r#"id = "limit"
name = "x"
per_member_limit = 0
benefit = { kind = "free_shipping" }
validity = { kind = "days_from_issue", days = 1 }"#,
            ),
            "templates[1].per_member_limit",
            "out_of_range",
        ),
        (
            second(
                r#"id = "gift"
name = "x"
benefit = { kind = "free_gift", gift_sku = "G", gift_quantity = 0 }
validity = { kind = "days_from_issue", days = 1 }"#,
            ),
            "templates[1].benefit.gift_quantity",
            "out_of_range",
        ),
        (
            second(
                r#"id = "cap"
name = "x"
benefit = { kind = "percent_off", off_bp = 1000, max_discount = 0 }
validity = { kind = "days_from_issue", days = 1 }"#,
            ),
            "templates[1].benefit.max_discount",
            "out_of_range",
        ),
        (
            second(
                r#"id = "zero"
name = "x"
benefit = { kind = "amount_off", amount_off = 0 }
validity = { kind = "days_from_issue", days = 1 }"#,
            ),
            "templates[1].benefit.amount_off",
            "out_of_range",
        ),
    ];
    for (text, field, code) in cases {
        assert_eq!(invalid_field(&text), (field.to_string(), code), "{text}");
    }
}

#[test]
fn unknown_fields_and_kinds_do_not_parse() {
    let typo = MINIMAL.replace("amount_off = 10", "amount_of = 10");
    assert!(matches!(templates_from_toml(&typo), Err(TemplateError::Parse(_))));
    let kind = MINIMAL.replace("\"amount_off\", threshold", "\"buy_one_get_one\", threshold");
    assert!(matches!(templates_from_toml(&kind), Err(TemplateError::Parse(_))));
    let extra = MINIMAL.replace("name = \"ok\"", "name = \"ok\"\nstackabel = true");
    assert!(matches!(templates_from_toml(&extra), Err(TemplateError::Parse(_))));
    let tz = MINIMAL.replace("name = \"ok\"", "name = \"ok\"\ntime_zone = \"Mars/Olympus\"");
    assert!(matches!(templates_from_toml(&tz), Err(TemplateError::Parse(_))));
    assert_eq!(templates_from_toml(MINIMAL).unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------------------
// Pricing: each benefit
// ---------------------------------------------------------------------------------------------------------

#[test]
fn amount_off_over_threshold_allocates_proportionally() {
    let tpl = template("full200-minus30");
    let c = coupon(&tpl, 1);
    let cart = cart(
        "tmall_flagship",
        vec![line(1, "SKIN-CREAM", "美妆/护肤/面霜", 1, 15_000), line(2, "TEA-LJ", "茶饮/绿茶", 2, 5_000)],
        800,
    );
    let q = quote(&cart, &[(&c, &tpl)]);
    assert_eq!(q.subtotal, 25_000);
    assert_eq!(q.total_discount, 3_000);
    assert_eq!(shares(&q), [1_800, 1_200]);
    assert_eq!(q.shipping_waived, 0);
    assert_eq!(q.payable, 25_000 - 3_000 + 800);
    assert_eq!(q.applied[0].message, "满200减30: 30.00 off 250.00");
    assert_eq!(
        q.applied[0].lines,
        [LineDiscount { line_no: 1, discount: 1_800 }, LineDiscount { line_no: 2, discount: 1_200 }]
    );
}

#[test]
fn amount_off_at_the_threshold_edge() {
    let tpl = template("full200-minus30");
    let c = coupon(&tpl, 1);
    let exactly = cart("tmall", vec![line(1, "A", "茶饮/绿茶", 1, 20_000)], 0);
    let q = quote(&exactly, &[(&c, &tpl)]);
    assert_eq!((q.total_discount, q.payable), (3_000, 17_000));

    let short = cart("tmall", vec![line(1, "A", "茶饮/绿茶", 1, 19_999)], 0);
    let q = quote(&short, &[(&c, &tpl)]);
    assert_eq!((q.total_discount, q.payable), (0, 19_999));
    assert_eq!(
        only_reason(&q),
        (&Reason::ThresholdNotMet { qualifying: 19_999, threshold: 20_000 }, "threshold not met: 199.99 of 200.00")
    );
}

#[test]
fn amount_off_never_exceeds_what_is_in_scope() {
    let mut tpl = template("full200-minus30");
    tpl.benefit = Benefit::AmountOff { threshold: 0, amount_off: 5_000 };
    let c = coupon(&tpl, 1);
    let cart = cart("tmall", vec![line(1, "A", "茶饮", 1, 1_234), line(2, "CARD", "礼品卡", 1, 10_000)], 600);
    let q = quote(&cart, &[(&c, &tpl)]);
    assert_eq!(shares(&q), [1_234, 0]);
    assert_eq!(q.payable, 10_000 + 600);
}

#[test]
fn threshold_counts_only_lines_in_scope() {
    let tpl = template("full200-minus30");
    let c = coupon(&tpl, 1);
    // Gift cards are excluded: 150.00 of merchandise + 100.00 of gift card do not reach 200.00.
    let cart1 =
        cart("tmall", vec![line(1, "A", "茶饮/绿茶", 1, 15_000), line(2, "CARD", "礼品卡/电子卡", 1, 10_000)], 0);
    let q = quote(&cart1, &[(&c, &tpl)]);
    let (reason, message) = only_reason(&q);
    assert_eq!(reason.code(), "threshold_not_met");
    assert_eq!(message, "threshold not met: 150.00 of 200.00");
    // `礼品卡套` (a gift-card sleeve) is not under `礼品卡`: whole segments only.
    let cart2 = cart("tmall", vec![line(1, "A", "茶饮/绿茶", 1, 15_000), line(2, "SLEEVE", "礼品卡套", 1, 10_000)], 0);
    let q = quote(&cart2, &[(&c, &tpl)]);
    assert_eq!(q.total_discount, 3_000);
    assert_eq!(shares(&q), [1_800, 1_200]);
    // Only gift cards: nothing qualifies.
    let cart3 = cart("tmall", vec![line(1, "CARD", "礼品卡", 3, 10_000)], 0);
    let q = quote(&cart3, &[(&c, &tpl)]);
    assert_eq!(only_reason(&q), (&Reason::NoQualifyingItems, "no qualifying items"));
}

#[test]
fn scope_inclusions_and_exclusions() {
    let scope = Scope {
        skus: vec!["GIFTBOX".into()],
        categories: vec!["茶饮/".into()],
        excluded_skus: vec!["TEA-SAMPLE".into()],
        excluded_categories: vec!["茶饮/试饮".into()],
        channels: vec![],
    };
    let covers = |sku: &str, cat: Option<&str>| {
        scope.covers(&CartLine {
            line_no: 1,
            sku: sku.into(),
            category_path: cat.map(str::to_string),
            quantity: 1,
            unit_price: 1,
            amount: 1,
        })
    };
    assert!(covers("TEA-1", Some("茶饮")));
    assert!(covers("TEA-1", Some("茶饮/绿茶/龙井")));
    assert!(!covers("TEA-1", Some("茶饮料")));
    assert!(covers("GIFTBOX", None), "included by SKU without a category");
    assert!(covers("GIFTBOX", Some("礼盒")));
    assert!(!covers("TEA-SAMPLE", Some("茶饮/绿茶")), "excluded SKU wins");
    assert!(!covers("TEA-2", Some("茶饮/试饮/小罐")), "excluded category wins");
    assert!(!covers("OTHER", None));
    assert!(scope.allows_channel("anything"));
}

#[test]
fn channel_scope() {
    let tpl = template("ten-percent-off");
    let c = coupon(&tpl, 2);
    let cart = cart("tmall", vec![line(1, "A", "茶饮", 1, 30_000)], 0);
    let q = quote(&cart, &[(&c, &tpl)]);
    assert_eq!(only_reason(&q), (&Reason::ChannelNotAllowed { channel: "tmall".into() }, "not valid on channel tmall"));
    assert_eq!(q.payable, 30_000);
}

#[test]
fn percent_off_with_cap() {
    let tpl = template("ten-percent-off");
    let c = coupon(&tpl, 2);
    let priced = |amounts: &[i64]| {
        let lines = amounts.iter().enumerate().map(|(i, &a)| line(i as i32 + 1, "A", "茶饮", 1, a)).collect();
        quote(&cart("wechat_mp", lines, 0), &[(&c, &tpl)])
    };
    assert_eq!(priced(&[30_000]).total_discount, 3_000);
    assert_eq!(priced(&[33_333]).total_discount, 3_333, "10% of 333.33 is 33.333, floored");
    let at_cap = priced(&[50_000]);
    assert_eq!(at_cap.total_discount, 5_000);
    assert_eq!(at_cap.applied[0].message, "9折最高减50: 50.00 off 500.00");
    let over = priced(&[40_000, 20_000]);
    assert_eq!(over.total_discount, 5_000, "60.00 capped at 50.00");
    assert_eq!(shares(&over), [3_333, 1_667]);
    assert_eq!(over.applied[0].message, "9折最高减50: 50.00 off 600.00, capped at 50.00");
    let tiny = priced(&[9]);
    assert_eq!(only_reason(&tiny), (&Reason::NoDiscount, "discount would be 0.00"));
    assert_eq!(priced(&[10]).total_discount, 1);
}

#[test]
fn percent_off_threshold_and_full_discount() {
    let mut tpl = template("ten-percent-off");
    tpl.benefit = Benefit::PercentOff { off_bp: BP, max_discount: None, threshold: 10_000 };
    tpl.scope = Scope::default();
    let c = coupon(&tpl, 3);
    let q = quote(&cart("tmall", vec![line(1, "A", "x", 3, 3_333), line(2, "B", "y", 1, 1)], 500), &[(&c, &tpl)]);
    assert_eq!(q.total_discount, 10_000);
    assert_eq!(shares(&q), [9_999, 1]);
    assert_eq!(q.payable, 500, "a 100% coupon leaves the shipping fee");
    let q = quote(&cart("tmall", vec![line(1, "A", "x", 1, 9_999)], 0), &[(&c, &tpl)]);
    assert_eq!(only_reason(&q).1, "threshold not met: 99.99 of 100.00");
}

fn tea_cart() -> Cart {
    cart(
        "tmall",
        vec![
            line(1, "TEA-LJ", "茶饮/绿茶", 2, 10_000),
            line(2, "TEA-HC", "茶饮/红茶", 1, 6_000),
            line(3, "TEA-BC", "茶饮/白茶", 1, 4_501),
            line(4, "SKIN-1", "美妆/护肤", 1, 1_000),
            line(5, "TEA-GIFTBOX-2026", "茶饮/礼盒", 1, 500),
        ],
        0,
    )
}

#[test]
fn nth_item_discounts_the_cheapest_qualifying_units() {
    let tpl = template("tea-second-half");
    let c = coupon(&tpl, 4);
    // In scope: 2 × 100.00, 60.00, 45.01 (the 10.00 skincare line is out of scope, the gift box excluded):
    // 4 units → 2 discounted, the cheapest two: 45.01 → 22.50 (floored) and 60.00 → 30.00.
    let q = quote(&tea_cart(), &[(&c, &tpl)]);
    assert_eq!(q.total_discount, 2_250 + 3_000);
    // Allocated over the in-scope lines by what they pay (200.00, 60.00, 45.01), remainder on the last.
    assert_eq!(shares(&q), [3_442, 1_032, 776, 0, 0]);
    assert_eq!(q.applied[0].message, "第二件半价: 2 of 4 unit(s) discounted, 52.50 off");
    assert_eq!(q.payable, 20_000 + 6_000 + 4_501 + 1_000 + 500 - 5_250);

    // Five units: still two discounted.
    let mut five = tea_cart();
    five.lines[0].quantity = 3;
    five.lines[0].amount = 30_000;
    assert_eq!(quote(&five, &[(&c, &tpl)]).total_discount, 5_250);

    // Six units: three discounted, the 45.01 unit and both 60.00 units.
    let mut six = five.clone();
    six.lines[1].quantity = 2;
    six.lines[1].amount = 12_000;
    assert_eq!(quote(&six, &[(&c, &tpl)]).total_discount, 2_250 + 3_000 + 3_000);
}

#[test]
fn nth_item_unit_values_follow_line_amounts() {
    let tpl = template("tea-second-half");
    let c = coupon(&tpl, 4);
    // 3 units paying 100.00 together are worth 33.33, 33.33 and 33.34; the other line's unit is 33.34.
    let mut l1 = line(1, "TEA-LJ", "茶饮/绿茶", 3, 3_400);
    l1.amount = 10_000;
    let q = quote(&cart("tmall", vec![l1, line(2, "TEA-HC", "茶饮/红茶", 1, 3_334)], 0), &[(&c, &tpl)]);
    assert_eq!(q.total_discount, 1_666 * 2, "two 33.33 units at half price, floored");
    // At most `max_units`: four 50.00 units, one discounted; the discount is shared by both lines.
    let mut capped = tpl.clone();
    capped.benefit = Benefit::NthItem { n: 2, off_bp: 5_000, max_units: Some(1) };
    let q = quote(
        &cart("tmall", vec![line(1, "TEA-LJ", "茶饮", 2, 5_000), line(2, "TEA-HC", "茶饮", 2, 5_000)], 0),
        &[(&c, &capped)],
    );
    assert_eq!(q.total_discount, 2_500, "max_units = 1");
    assert_eq!(shares(&q), [1_250, 1_250]);
}

#[test]
fn nth_item_needs_enough_units() {
    let tpl = template("tea-second-half");
    let c = coupon(&tpl, 4);
    let q = quote(
        &cart("tmall", vec![line(1, "TEA-LJ", "茶饮/绿茶", 1, 10_000), line(2, "TEA-GIFTBOX-2026", "茶饮", 1, 500)], 0),
        &[(&c, &tpl)],
    );
    assert_eq!(
        only_reason(&q),
        (&Reason::NotEnoughItems { units: 1, needed: 2 }, "not enough qualifying items: 1 of 2")
    );
}

#[test]
fn free_gift_at_threshold() {
    let tpl = template("gift-over-299");
    let c = coupon(&tpl, 5);
    let q = quote(&cart("tmall", vec![line(1, "SKIN-CREAM", "美妆/护肤/面霜", 1, 29_900)], 1_000), &[(&c, &tpl)]);
    assert_eq!(q.gifts, [Gift { sku: "SKIN-TONER-30ML".into(), quantity: 1, coupon_code: c.code.clone() }]);
    assert_eq!(q.applied[0].gift, Some(q.gifts[0].clone()));
    assert_eq!((q.total_discount, q.payable), (0, 30_900));
    assert_eq!(q.applied[0].message, "满299赠旅行装: 1 × SKIN-TONER-30ML added free");
    let q = quote(
        &cart(
            "tmall",
            vec![line(1, "SKIN-CREAM", "美妆/护肤/面霜", 1, 29_899), line(2, "TEA-LJ", "茶饮/绿茶", 1, 10_000)],
            0,
        ),
        &[(&c, &tpl)],
    );
    assert!(q.gifts.is_empty());
    assert_eq!(only_reason(&q).1, "threshold not met: 298.99 of 299.00");
}

#[test]
fn free_shipping() {
    let tpl = template("free-shipping-99");
    let c = coupon(&tpl, 6);
    let q = quote(&cart("tmall", vec![line(1, "A", "茶饮", 1, 9_900)], 1_000), &[(&c, &tpl)]);
    assert_eq!((q.shipping_waived, q.total_discount, q.payable), (1_000, 0, 9_900));
    assert_eq!(q.applied[0].shipping_waived, 1_000);
    assert_eq!(q.applied[0].message, "满99包邮: shipping 10.00 waived");

    let q = quote(&cart("tmall", vec![line(1, "A", "茶饮", 1, 9_899)], 1_000), &[(&c, &tpl)]);
    assert_eq!((q.shipping_waived, q.payable), (0, 10_899));
    assert_eq!(only_reason(&q).1, "threshold not met: 98.99 of 99.00");

    let q = quote(&cart("tmall", vec![line(1, "A", "茶饮", 1, 20_000)], 0), &[(&c, &tpl)]);
    assert_eq!(only_reason(&q), (&Reason::NoShippingFee, "no shipping fee to waive"));

    let c2 = coupon(&tpl, 7);
    let q = quote(&cart("tmall", vec![line(1, "A", "茶饮", 1, 20_000)], 1_000), &[(&c, &tpl), (&c2, &tpl)]);
    assert_eq!(q.shipping_waived, 1_000);
    assert_eq!(q.applied.len(), 1);
    assert_eq!(only_reason(&q).0, &Reason::ShippingAlreadyWaived);
}

// ---------------------------------------------------------------------------------------------------------
// Pricing: allocation, stacking, validity, refusals
// ---------------------------------------------------------------------------------------------------------

#[test]
fn allocation_puts_the_remainder_on_the_last_line_and_spills_back() {
    let mut tpl = template("full200-minus30");
    tpl.benefit = Benefit::AmountOff { threshold: 0, amount_off: 3_000 };
    let c = coupon(&tpl, 1);
    // 100.00 + 50.00 + 0.01, 30.00 off: ⌊1999.87⌋, ⌊999.93⌋, ⌊0.2⌋ = 2998; 2 fen left. The last line can take
    // only 1 fen (it pays 0.01), the other spills to the line before it.
    let q = quote(
        &cart(
            "tmall",
            vec![line(1, "A", "茶饮", 1, 10_000), line(2, "B", "茶饮", 1, 5_000), line(3, "C", "茶饮", 1, 1)],
            0,
        ),
        &[(&c, &tpl)],
    );
    assert_eq!(shares(&q), [1_999, 1_000, 1]);
    assert_eq!(q.lines[2].payable, 0);
    assert_eq!(allocate(10, &[0, 1, 2], &[0, 7, 3]), [0, 7, 3]);
    assert_eq!(allocate(7, &[0, 1, 2], &[3, 3, 3]), [2, 2, 3]);
    assert_eq!(allocate(0, &[0], &[5]), [0]);
}

#[test]
fn at_most_one_coupon_unless_all_are_stackable() {
    let full = template("full200-minus30");
    let pct = template("ten-percent-off");
    let tea = template("tea-second-half");
    let ship = template("free-shipping-99");
    let (c_full, c_pct, c_tea, c_ship) = (coupon(&full, 1), coupon(&pct, 2), coupon(&tea, 3), coupon(&ship, 4));
    let big = cart("wechat_mp", vec![line(1, "TEA-LJ", "茶饮/绿茶", 2, 15_000)], 1_000);

    // Two coupons that do not stack: the first wins.
    let q = quote(&big, &[(&c_full, &full), (&c_pct, &pct)]);
    assert_eq!(q.total_discount, 3_000);
    let (reason, message) = only_reason(&q);
    assert_eq!(reason, &Reason::NotCombinable { with: c_full.code.clone() });
    assert_eq!(message, format!("does not combine with coupon {}", display_code(&c_full.code)));

    // A stackable coupon first, then one that does not stack: refused.
    let q = quote(&big, &[(&c_tea, &tea), (&c_full, &full)]);
    assert_eq!(q.applied.len(), 1);
    assert_eq!(only_reason(&q).0, &Reason::NotCombinable { with: c_tea.code.clone() });

    // Stackable with stackable: both.
    let q = quote(&big, &[(&c_tea, &tea), (&c_ship, &ship)]);
    assert_eq!((q.total_discount, q.shipping_waived), (7_500, 1_000));
    assert!(q.not_applied.is_empty());
    assert_eq!(q.payable, 30_000 - 7_500);

    // A coupon that does not apply blocks nothing.
    let small = cart("wechat_mp", vec![line(1, "TEA-LJ", "茶饮/绿茶", 1, 15_000)], 0);
    let q = quote(&small, &[(&c_full, &full), (&c_pct, &pct)]);
    assert_eq!(q.applied.len(), 1);
    assert_eq!(q.applied[0].coupon_code, c_pct.code);
    assert_eq!(q.total_discount, 1_500);
    assert_eq!(only_reason(&q).0.code(), "threshold_not_met");
}

#[test]
fn later_coupons_see_what_is_left_to_pay() {
    let tea = template("tea-second-half");
    let mut full = template("full200-minus30");
    full.stackable = true;
    full.benefit = Benefit::AmountOff { threshold: 20_000, amount_off: 2_000 };
    let (c_tea, c_full) = (coupon(&tea, 1), coupon(&full, 2));
    let cart = cart("tmall", vec![line(1, "TEA-LJ", "茶饮/绿茶", 2, 10_500)], 0);

    // Half price on one 105.00 unit first: 157.50 left, below 200.00.
    let q = quote(&cart, &[(&c_tea, &tea), (&c_full, &full)]);
    assert_eq!(q.total_discount, 5_250);
    assert_eq!(only_reason(&q).1, "threshold not met: 157.50 of 200.00");

    // 满减 first: 210.00 → 190.00, two units of 95.00, one at half price.
    let q = quote(&cart, &[(&c_full, &full), (&c_tea, &tea)]);
    assert_eq!(q.total_discount, 2_000 + 4_750);
    assert_eq!(q.payable, 21_000 - 6_750);
}

#[test]
fn validity_window_start_inclusive_end_exclusive() {
    let tpl = template("full200-minus30");
    let c = coupon(&tpl, 1);
    assert_eq!((c.valid_from, c.valid_until), (t("2026-10-20T00:00:00+08:00"), t("2026-11-12T00:00:00+08:00")));
    let cart = cart("tmall", vec![line(1, "A", "茶饮", 1, 20_000)], 0);
    let at = |s: &str| quote_at(&cart, &[(&c, &tpl)], t(s));

    assert_eq!(at("2026-10-20T00:00:00+08:00").total_discount, 3_000);
    assert_eq!(at("2026-11-11T23:59:59+08:00").total_discount, 3_000);
    let early = at("2026-10-19T23:59:59+08:00");
    assert_eq!(only_reason(&early), (&Reason::NotYetValid { valid_from: c.valid_from }, "valid from 2026-10-20"));
    let late = at("2026-11-12T00:00:00+08:00");
    assert_eq!(only_reason(&late), (&Reason::Expired { valid_until: c.valid_until }, "expired on 2026-11-12"));
    assert_eq!(late.payable, 20_000);

    // N days from issue: from the instant of issue, for N × 24 hours.
    let pct = template("ten-percent-off");
    let c = coupon(&pct, 2);
    assert_eq!((c.valid_from, c.valid_until), (issued(), t("2026-11-30T12:00:00+08:00")));
    let cart = Cart { channel: "wechat_mp".into(), ..cart };
    let q = quote_at(&cart, &[(&c, &pct)], t("2026-11-30T12:00:00+08:00"));
    assert_eq!(only_reason(&q).1, "expired on 2026-11-30 12:00");
    assert_eq!(quote_at(&cart, &[(&c, &pct)], t("2026-11-30T11:59:59+08:00")).total_discount, 2_000);
}

#[test]
fn coupons_that_cannot_be_used_say_why() {
    let tpl = template("full200-minus30");
    let pct = template("ten-percent-off");
    let c = coupon(&tpl, 1);
    let cart = cart("tmall", vec![line(1, "A", "茶饮", 1, 20_000)], 0);

    let used = redeem(&c, "tmall:100", now()).unwrap();
    let q = quote(&cart, &[(&used, &tpl)]);
    assert_eq!(only_reason(&q), (&Reason::NotAvailable { state: "redeemed".into() }, "coupon is redeemed"));
    let voided = void(&c).unwrap();
    assert_eq!(only_reason(&quote(&cart, &[(&voided, &tpl)])).1, "coupon is voided");

    let other = Coupon { member_id: 7, ..c.clone() };
    assert_eq!(only_reason(&quote(&cart, &[(&other, &tpl)])).0, &Reason::NotYourCoupon);

    let q = quote(&cart, &[(&c, &pct)]);
    assert_eq!(
        only_reason(&q),
        (&Reason::TemplateMismatch { expected: tpl.id.clone() }, "coupon is of template full200-minus30")
    );

    let mut stackable = tpl.clone();
    stackable.stackable = true;
    let c = coupon(&stackable, 1);
    let q = quote(&cart, &[(&c, &stackable), (&c, &stackable)]);
    assert_eq!(q.total_discount, 3_000);
    assert_eq!(only_reason(&q), (&Reason::DuplicateCode, "coupon listed twice"));
}

#[test]
fn reasons_serialize_with_a_machine_code() {
    let r = Reason::ThresholdNotMet { qualifying: 15_000, threshold: 20_000 };
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        serde_json::json!({"code": "threshold_not_met", "qualifying": 15000, "threshold": 20000})
    );
    assert_eq!(
        serde_json::to_value(Reason::NoQualifyingItems).unwrap(),
        serde_json::json!({"code": "no_qualifying_items"})
    );
    let all = [
        Reason::TemplateMismatch { expected: "x".into() },
        Reason::NotYourCoupon,
        Reason::DuplicateCode,
        Reason::NotAvailable { state: "voided".into() },
        Reason::NotYetValid { valid_from: now() },
        Reason::Expired { valid_until: now() },
        Reason::ChannelNotAllowed { channel: "jd".into() },
        Reason::NoQualifyingItems,
        Reason::NotCombinable { with: "X".into() },
        r,
        Reason::NotEnoughItems { units: 1, needed: 2 },
        Reason::NoShippingFee,
        Reason::ShippingAlreadyWaived,
        Reason::NoDiscount,
    ];
    for reason in all {
        let json = serde_json::to_value(&reason).unwrap();
        assert_eq!(json["code"], reason.code());
        assert_eq!(serde_json::from_value::<Reason>(json).unwrap(), reason);
    }
}

#[test]
fn invalid_carts_are_refused_with_the_field() {
    let tpl = template("full200-minus30");
    let c = coupon(&tpl, 1);
    let field = |cart: Cart| price(&cart, &[(&c, &tpl)], now()).unwrap_err().field;
    assert_eq!(field(cart("tmall", vec![line(1, "A", "x", 1, 100), line(1, "B", "x", 1, 100)], 0)), "lines[1].line_no");
    let mut l = line(1, "A", "x", 2, 100);
    l.amount = 201;
    assert_eq!(field(cart("tmall", vec![l], 0)), "lines[0].amount");
    assert_eq!(field(cart("tmall", vec![line(1, "A", "x", 0, 100)], 0)), "lines[0].quantity");
    assert_eq!(field(cart("tmall", vec![line(1, "A", "x", 1, 100)], -1)), "shipping_fee");
    assert_eq!(field(cart(" ", vec![], 0)), "channel");
    assert_eq!(field(cart("tmall", vec![line(1, "", "x", 1, 100)], 0)), "lines[0].sku");
    // An empty cart is valid: nothing qualifies.
    let q = quote(&cart("tmall", vec![], 500), &[(&c, &tpl)]);
    assert_eq!((q.payable, only_reason(&q).0.code()), (500, "no_qualifying_items"));
}

// ---------------------------------------------------------------------------------------------------------
// Codes and issuing
// ---------------------------------------------------------------------------------------------------------

#[test]
fn codes_are_deterministic_and_well_formed() {
    let a = generate_code(&mut rng(9));
    assert_eq!(a, generate_code(&mut rng(9)));
    assert_ne!(a, generate_code(&mut rng(10)));
    assert_eq!(a.len(), CODE_LEN);
    assert!(a.bytes().all(|b| CODE_ALPHABET.contains(&b)));
    for ambiguous in ['0', 'O', '1', 'I', 'L'] {
        assert!(!CODE_ALPHABET.contains(&(ambiguous as u8)));
    }
    assert_eq!(check_code(&a), Ok(a.clone()));
    assert_eq!(check_code("7kq2-mxwd-93tg"), Ok("7KQ2MXWD93TG".to_string()), "the documented example");
    assert_eq!(display_code("7KQ2MXWD93TG"), "7KQ2-MXWD-93TG");
    let shown = display_code(&a);
    assert_eq!(shown.len(), 14);
    assert_eq!(shown.matches('-').count(), 2);
    assert_eq!(check_code(&shown.to_lowercase()), Ok(a.clone()));
    assert_eq!(check_code(&format!(" {} ", shown.replace('-', " "))), Ok(a.clone()));
}

#[test]
fn check_code_rejects_typos_before_any_lookup() {
    let mut r = rng(11);
    for _ in 0..300 {
        let code = generate_code(&mut r);
        let bytes = code.as_bytes();
        for pos in 0..CODE_LEN {
            for &other in CODE_ALPHABET.iter().filter(|&&s| s != bytes[pos]) {
                let mut typo = bytes.to_vec();
                typo[pos] = other;
                let typo = String::from_utf8(typo).unwrap();
                assert_eq!(check_code(&typo), Err(CodeError::CheckFailed), "{code} → {typo}");
            }
            for j in pos + 1..CODE_LEN {
                if bytes[pos] != bytes[j] {
                    let mut swapped = bytes.to_vec();
                    swapped.swap(pos, j);
                    let swapped = String::from_utf8(swapped).unwrap();
                    assert_eq!(check_code(&swapped), Err(CodeError::CheckFailed), "{code} → {swapped}");
                }
            }
        }
    }
}

#[test]
fn check_code_explains_malformed_input() {
    let code = generate_code(&mut rng(12));
    assert_eq!(check_code(&code[..11]), Err(CodeError::WrongLength { expected: 12, found: 11 }));
    assert_eq!(check_code(""), Err(CodeError::WrongLength { expected: 12, found: 0 }));
    for (bad, position) in [('O', 0), ('0', 3), ('I', 7), ('1', 11), ('L', 5), ('券', 2)] {
        let mut chars: Vec<char> = code.chars().collect();
        chars[position] = bad;
        let typed: String = chars.into_iter().collect();
        assert_eq!(check_code(&typed), Err(CodeError::BadCharacter { character: bad, position }));
    }
    assert_eq!(
        CodeError::BadCharacter { character: 'O', position: 0 }.to_string(),
        "`O` at position 0 is not used in coupon codes"
    );
}

#[test]
fn issue_enforces_limits_and_windows() {
    let full = template("full200-minus30"); // per member 1, total 50 000, fixed window
    let pct = template("ten-percent-off"); // per member 2, 30 days
    let at = issued();

    let c = issue(&pct, MEMBER, 1, 0, at, &mut rng(1)).unwrap();
    assert_eq!((c.member_id, c.template_id.as_str(), c.issued_at), (MEMBER, "ten-percent-off", at));
    assert_eq!(c.state, CouponState::Available);
    assert_eq!(issue(&pct, MEMBER, 2, 0, at, &mut rng(1)), Err(IssueError::LimitReached { limit: 2, held: 2 }));

    assert!(issue(&full, MEMBER, 0, 49_999, at, &mut rng(1)).is_ok());
    assert_eq!(issue(&full, MEMBER, 0, 50_000, at, &mut rng(1)), Err(IssueError::SoldOut { total: 50_000 }));

    let end = t("2026-11-12T00:00:00+08:00");
    let last = issue(&full, MEMBER, 0, 0, end - Duration::seconds(1), &mut rng(1)).unwrap();
    assert_eq!((last.valid_from, last.valid_until), (t("2026-10-20T00:00:00+08:00"), end));
    assert_eq!(issue(&full, MEMBER, 0, 0, end, &mut rng(1)), Err(IssueError::WindowClosed { end }));
    // Issued before the window opens: usable from its start.
    let early = issue(&full, MEMBER, 0, 0, t("2026-10-01T00:00:00+08:00"), &mut rng(1)).unwrap();
    assert_eq!(early.valid_from, t("2026-10-20T00:00:00+08:00"));

    let Err(IssueError::Invalid(e)) = issue(&full, 0, 0, 0, at, &mut rng(1)) else { panic!("member 0 refused") };
    assert_eq!(e.field, "member_id");
    let mut broken = full.clone();
    broken.per_member_limit = 0;
    let Err(IssueError::Invalid(e)) = issue(&broken, MEMBER, 0, 0, at, &mut rng(1)) else { panic!("invalid template") };
    assert_eq!(e.field, "per_member_limit");
}

#[test]
fn bulk_issue_counts_members_and_stock() {
    let mut tpl = template("full200-minus30");
    tpl.total_quantity = Some(3);
    let recipients = [
        Recipient { member_id: 1, held: 0 },
        Recipient { member_id: 2, held: 0 },
        Recipient { member_id: 1, held: 0 },
        Recipient { member_id: 3, held: 1 },
        Recipient { member_id: 4, held: 0 },
        Recipient { member_id: 5, held: 0 },
    ];
    let out = issue_bulk(&tpl, &recipients, 0, issued(), &mut rng(5));
    assert_eq!(out.coupons.iter().map(|c| c.member_id).collect::<Vec<_>>(), [1, 2, 4]);
    assert_eq!(
        out.refused,
        [
            (2, 1, IssueError::LimitReached { limit: 1, held: 1 }),
            (3, 3, IssueError::LimitReached { limit: 1, held: 1 }),
            (5, 5, IssueError::SoldOut { total: 3 }),
        ]
    );
    assert_eq!(out, issue_bulk(&tpl, &recipients, 0, issued(), &mut rng(5)), "same seed, same batch");
}

#[test]
fn bulk_issue_gives_unique_valid_codes() {
    let mut tpl = template("ten-percent-off");
    tpl.per_member_limit = MAX_PER_MEMBER;
    let recipients: Vec<Recipient> = (1..=20_000).map(|i| Recipient { member_id: i % 50 + 1, held: 0 }).collect();
    let out = issue_bulk(&tpl, &recipients, 0, issued(), &mut rng(6));
    assert!(out.refused.is_empty());
    assert_eq!(out.coupons.len(), 20_000);
    let codes: BTreeSet<&str> = out.coupons.iter().map(|c| c.code.as_str()).collect();
    assert_eq!(codes.len(), 20_000);
    assert!(out.coupons.iter().all(|c| check_code(&c.code).as_deref() == Ok(c.code.as_str())));
    // The per-member count goes on within the batch: 400 each for 50 members, the limit allowing it.
    let mut low = tpl.clone();
    low.per_member_limit = 399;
    let out = issue_bulk(&low, &recipients, 0, issued(), &mut rng(6));
    assert_eq!((out.coupons.len(), out.refused.len()), (399 * 50, 50));
}

// ---------------------------------------------------------------------------------------------------------
// State transitions
// ---------------------------------------------------------------------------------------------------------

#[test]
fn redeem_is_idempotent_per_order() {
    let tpl = template("ten-percent-off");
    let c = coupon(&tpl, 1);
    let used = redeem(&c, "tmall:8801", now()).unwrap();
    assert_eq!(used.state, CouponState::Redeemed { order_ref: "tmall:8801".into(), at: now() });
    assert_eq!(used.code, c.code);
    // A retry, later: the same record, with the original time.
    assert_eq!(redeem(&used, "tmall:8801", now() + Duration::hours(1)), Ok(used.clone()));
    assert_eq!(
        redeem(&used, "tmall:8802", now()),
        Err(RedeemError::AlreadyRedeemed { order_ref: "tmall:8801".into() })
    );
    assert!(matches!(redeem(&c, " ", now()), Err(RedeemError::Invalid(e)) if e.field == "order_ref"));
}

#[test]
fn redeem_respects_the_window_and_state() {
    let tpl = template("full200-minus30");
    let c = coupon(&tpl, 1);
    assert!(redeem(&c, "o1", c.valid_from).is_ok());
    assert!(redeem(&c, "o1", c.valid_until - Duration::seconds(1)).is_ok());
    assert_eq!(
        redeem(&c, "o1", c.valid_from - Duration::seconds(1)),
        Err(RedeemError::NotYetValid { valid_from: c.valid_from })
    );
    assert_eq!(redeem(&c, "o1", c.valid_until), Err(RedeemError::Expired { valid_until: c.valid_until }));
    assert_eq!(redeem(&void(&c).unwrap(), "o1", now()), Err(RedeemError::Voided));
    let expired = expire(&c, c.valid_until);
    assert_eq!(expired.state, CouponState::Expired);
    assert_eq!(redeem(&expired, "o1", now()), Err(RedeemError::Expired { valid_until: c.valid_until }));
}

#[test]
fn void_and_expire() {
    let tpl = template("full200-minus30");
    let c = coupon(&tpl, 1);
    let voided = void(&c).unwrap();
    assert_eq!(voided.state, CouponState::Voided);
    assert_eq!(void(&voided), Ok(voided.clone()));
    let used = redeem(&c, "o1", now()).unwrap();
    assert_eq!(void(&used), Err(RedeemError::AlreadyRedeemed { order_ref: "o1".into() }));
    assert_eq!(expire(&c, c.valid_until - Duration::seconds(1)), c);
    assert_eq!(expire(&c, c.valid_until).state, CouponState::Expired);
    assert_eq!(expire(&used, c.valid_until + Duration::days(1)), used, "a used coupon stays used");
    assert_eq!(expire(&voided, c.valid_until), voided);
}

#[test]
fn refund_policies() {
    let tpl = template("full200-minus30");
    let c = coupon(&tpl, 1);
    let used = redeem(&c, "o1", now()).unwrap();
    let open = c.valid_until - Duration::seconds(1);
    let closed = c.valid_until;
    let available = Coupon { state: CouponState::Available, ..used.clone() };
    let expired = Coupon { state: CouponState::Expired, ..used.clone() };
    use RefundExtent::{Partial, Whole};
    use RefundPolicy::{AlwaysReturn, Never, ReturnIfValid};

    let cases = [
        (ReturnIfValid, Whole, open, &available),
        (ReturnIfValid, Whole, closed, &used),
        (ReturnIfValid, Partial, open, &used),
        (Never, Whole, open, &used),
        (Never, Partial, open, &used),
        (AlwaysReturn, Whole, open, &available),
        (AlwaysReturn, Whole, closed, &expired),
        (AlwaysReturn, Partial, open, &used),
    ];
    for (policy, extent, at, want) in cases {
        assert_eq!(&on_refund(&used, "o1", extent, policy, at), want, "{policy:?} {extent:?} at {at}");
    }
    // The returned coupon keeps its original window.
    let back = on_refund(&used, "o1", Whole, ReturnIfValid, open);
    assert_eq!((back.valid_from, back.valid_until, back.issued_at), (c.valid_from, c.valid_until, c.issued_at));
    // A retry changes nothing; nor does a refund of another order, or of the order after the coupon moved on.
    assert_eq!(on_refund(&back, "o1", Whole, ReturnIfValid, open), back);
    assert_eq!(on_refund(&used, "o2", Whole, AlwaysReturn, open), used);
    let reused = redeem(&back, "o3", open).unwrap();
    assert_eq!(on_refund(&reused, "o1", Whole, AlwaysReturn, open), reused);
    assert_eq!(RefundPolicy::default(), ReturnIfValid);
}

#[test]
fn coupons_serialize_as_plain_records() {
    let c = redeem(&coupon(&template("full200-minus30"), 1), "tmall:1", now()).unwrap();
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(
        json["state"],
        serde_json::json!({"kind": "redeemed", "order_ref": "tmall:1", "at": "2026-11-01T04:00:00Z"})
    );
    assert_eq!(serde_json::from_value::<Coupon>(json).unwrap(), c);
}

// ---------------------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------------------

/// A pool of templates covering every kind, a 100% coupon and an amount bigger than most carts.
fn pool() -> Vec<CouponTemplate> {
    let mut all = example();
    let base = all[0].clone();
    let mut variant = |id: &str, benefit: Benefit, scope: Scope| {
        let mut t = base.clone();
        t.id = id.to_string();
        t.benefit = benefit;
        t.scope = scope;
        t.total_quantity = None;
        t.validity = Validity::DaysFromIssue { days: 30 };
        all.push(t);
    };
    variant("free-order", Benefit::PercentOff { off_bp: BP, max_discount: None, threshold: 0 }, Scope::default());
    variant("big-amount", Benefit::AmountOff { threshold: 0, amount_off: 1_000_000 }, Scope::default());
    variant(
        "third-free",
        Benefit::NthItem { n: 3, off_bp: BP, max_units: None },
        Scope { categories: vec!["美妆".into()], ..Scope::default() },
    );
    variant(
        "sku-off",
        Benefit::PercentOff { off_bp: 3_333, max_discount: Some(777), threshold: 100 },
        Scope { skus: vec!["S1".into(), "S2".into()], ..Scope::default() },
    );
    all
}

fn arb_line() -> impl Strategy<Value = (usize, usize, i64, i64, i64)> {
    (0usize..5, 0usize..5, 1i64..6, 0i64..60_000, 0i64..100)
}

fn arb_cart() -> impl Strategy<Value = Cart> {
    (prop::collection::vec(arb_line(), 0..7), 0i64..2_000, 0usize..3).prop_map(|(lines, shipping_fee, ch)| {
        let skus = ["S1", "S2", "S3", "TEA-GIFTBOX-2026", "S5"];
        let cats = ["茶饮/绿茶", "美妆/护肤/面霜", "礼品卡", "茶饮", "美妆"];
        let lines = lines
            .into_iter()
            .enumerate()
            .map(|(i, (s, c, quantity, unit_price, pct_paid))| CartLine {
                line_no: i as i32 + 1,
                sku: skus[s].to_string(),
                category_path: if c == 4 && s == 4 { None } else { Some(cats[c].to_string()) },
                quantity,
                unit_price,
                amount: quantity * unit_price * pct_paid / 100,
            })
            .collect();
        Cart {
            member_id: MEMBER,
            channel: ["tmall", "wechat_mp", "tmall_flagship"][ch].to_string(),
            lines,
            shipping_fee,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the cart and the coupons (any kinds, any order, stackable or not, some listed twice):
    /// allocations sum to the discount exactly, per coupon and in total; no line is discounted beyond what it
    /// costs; the payable total is the arithmetic of the parts and never negative; pricing is deterministic.
    #[test]
    fn allocation_sums_and_payable_never_negative(
        cart in arb_cart(),
        picks in prop::collection::vec((0usize..9, any::<bool>()), 0..5),
    ) {
        let pool = pool();
        let templates: Vec<CouponTemplate> = picks
            .iter()
            .map(|&(i, stack)| CouponTemplate { stackable: stack, ..pool[i].clone() })
            .collect();
        let coupons: Vec<Coupon> =
            (0..picks.len()).map(|k| coupon(&templates[k], k as u64)).collect();
        let chosen: Vec<(&Coupon, &CouponTemplate)> = coupons.iter().zip(&templates).collect();
        let q = price(&cart, &chosen, now()).unwrap();
        assert_consistent(&cart, &chosen, &q);
        prop_assert_eq!(q.lines.iter().map(|l| l.discount).sum::<i64>(), q.total_discount);
        prop_assert!(q.lines.iter().all(|l| l.discount <= l.amount));
        prop_assert!(q.payable >= 0);
        prop_assert!(q.shipping_waived == 0 || q.shipping_waived == cart.shipping_fee);
        let stack_ok = q.applied.len() <= 1
            || q.applied.iter().all(|a| chosen.iter().any(|(c, t)| c.code == a.coupon_code && t.stackable));
        prop_assert!(stack_ok, "non-stackable coupon combined: {:?}", q.applied);
        prop_assert_eq!(price(&cart, &chosen, now()).unwrap(), q);
    }

    /// The allocation on its own: exact sum, each share between zero and its line's amount.
    #[test]
    fn allocate_is_exact_and_bounded(nets in prop::collection::vec(0i64..1_000_000_000, 1..12), frac in 0u32..=1000) {
        let total: i64 = nets.iter().sum();
        let d = i64::try_from(i128::from(total) * i128::from(frac) / 1000).unwrap();
        let idx: Vec<usize> = (0..nets.len()).collect();
        let shares = allocate(d, &idx, &nets);
        prop_assert_eq!(shares.iter().sum::<i64>(), d);
        for (s, n) in shares.iter().zip(&nets) {
            prop_assert!(0 <= *s && s <= n);
        }
    }
}
