#!/usr/bin/env python3
"""Fill a freshly migrated Huiyuan SQLite database with a synthetic shop for the scale benchmark.

Default shape: 1,000,000 active members registered over three years (2023-11-01 .. 2026-10-31 UTC), exactly
20,000,000 paid orders over the same years (a fifth of the members never buy, three in ten buy once, the rest
buy again with a heavy tail of frequent buyers, some of whom stop buying), ~1.7 product lines per order over
3,024 SKUs (36 categories in 6 departments, 60 brands), coupons and line discounts, ~3 % refunded orders, the
points ledger of those orders, and ~15 M behaviour events over the last 120 days (checkout and purchase for
the orders placed in the brand's own channels, with the product views and carts of half of them, browsing
sessions, check-ins, campaign opens and clicks, reviews).

Everything is derived from integer hashes of row keys and the seed, so a run is deterministic. All work is
SQL executed inside SQLite (stdlib ``sqlite3``); Python only assembles the statements.

Only the tables ``huiyuan analyze`` reads are filled (members, orders, order_lines, skus, refunds, events,
ledger_entries), plus the rows the app writes beside them that cost little (stores, refund_lines, and the
rule set the ledger follows).
Rows are shaped like the app's: integer-microsecond UTC instants, order numbers unique per channel, statuses
``paid``/``shipped``/``completed``, line ``amount = quantity x unit_price - discount``, order ``total =
lines - discounts + shipping``, whole-order refunds with their lines, and ledger entries keyed ``{op}#{n}`` with
the canonical request JSON of the ledger kernel. The ledger is that of a program with 1 point per yuan, no
return window and no expiry (``[loyalty] return_window_days = 0, expiry_months = 0``) and no growth value: one
``earn`` entry per product line, a ``reverse`` entry per earning line of a refunded order, and one ``redeem``
entry for some members (spent from their first lot, as the kernel's earliest-lot-first order does).

Not written (``analyze`` does not read them and no constraint asks for them): identities, natural_keys,
audit_log, the loyalty queue and evaluations, rewards and redemptions records, tiers.
"""

import argparse
import datetime as dt
import sqlite3
import sys
import os
import time

P = 2147483647  # 2^31 - 1: hashes are computed modulo this prime with 64-bit SQLite integers.
# Multipliers below 2^20 keep `key * M` far from 2^63 for keys up to ~10^12.
MULTS = [48271, 69621, 16807, 39373, 101917, 196613, 393241, 786433, 524287, 131071, 8191, 65537, 257531,
         611953, 999983, 337153, 472393, 712573, 833977, 921143, 274453, 583673, 658379, 45989]

START = int(dt.datetime(2023, 11, 1, tzinfo=dt.timezone.utc).timestamp())
END = int(dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc).timestamp())  # exclusive; as-of day 2026-10-31
DAY = 86400
EVENT_DAYS = 120
US = 1000000

# (code of a channel the app seeds, order-number prefix, share of orders)
CHANNELS = [
    ("app", "A", 0.28),
    ("mini_program", "MP", 0.24),
    ("web", "W", 0.05),
    ("tmall", "TM", 0.16),
    ("jd", "JD", 0.10),
    ("douyin", "DY", 0.05),
    ("store", "S", 0.12),
]
OWNED = (0, 1, 2)  # channels whose shopping sessions the brand tracks as events
CITIES = ["上海", "北京", "广州", "深圳", "杭州", "成都", "南京", "武汉", "苏州", "重庆", "西安", "长沙"]
DEPARTMENTS = ["美妆", "个护", "母婴", "食品", "服饰", "家居"]
# Six leaves per department: (path below the department, typical price in yuan).
LEAVES = [
    ("护肤/面霜", 320), ("护肤/精华", 420), ("护肤/面膜", 99), ("护肤/洁面", 89), ("彩妆/口红", 199), ("香水", 580),
    ("洗发", 69), ("沐浴", 59), ("口腔", 39), ("身体护理", 79), ("剃须", 129), ("手部护理", 49),
    ("奶粉", 328), ("纸尿裤", 149), ("辅食", 49), ("童装", 159), ("玩具", 119), ("洗护", 69),
    ("零食/坚果", 79), ("零食/饼干", 29), ("茶饮/茶叶", 168), ("茶饮/咖啡", 89), ("粮油/大米", 59), ("生鲜/水果", 69),
    ("女装/连衣裙", 299), ("女装/T恤", 99), ("男装/衬衫", 229), ("鞋靴/运动鞋", 399), ("箱包/双肩包", 259), ("配饰/围巾", 129),
    ("床品/四件套", 359), ("厨具/锅具", 279), ("收纳", 59), ("清洁", 45), ("灯具", 199), ("餐具", 89),
]
SKUS_PER_LEAF = 84
BRANDS_PER_DEPT = 10
REVIEWS = ["质量很好，敏感肌也能用", "送礼很合适，包装精美", "油皮用着清爽不闷痘", "物流很快，回购了", "一般般，还可以",
           "皮肤敏感，用了没有过敏", "买来送人的礼物，对方很喜欢", "出油的夏天用刚好", "性价比高", "味道好，会再买"]

# Member classes: none, once, occasional, regular, frequent, heavy (cumulative share, order-rate weight,
# probability of still buying at the end, browsing sessions per 120 days).
EXPLAIN = os.environ.get("SCALE_GEN_EXPLAIN") == "1"
CLASS_CUM = [0.20, 0.50, 0.72, 0.88, 0.97, 1.00]
CLASS_WEIGHT = [0, 0, 1, 10, 45, 180]
CLASS_RETAIN = [0, 0, 0.40, 0.60, 0.75, 0.85]
CLASS_BROWSE = [0.3, 0.5, 1.5, 3, 6, 10]


class Gen:
    def __init__(self, seed):
        self.seed = seed

    def h(self, x, salt):
        """SQL for a pseudo-random integer in [0, P) from integer SQL expression `x` (0 <= x < 10^12)."""
        m = MULTS[salt % len(MULTS)]
        c = (salt * 1000003 + self.seed * 7777 + 12345) % P
        a = f"((({x})*{m}+{c})%{P})"
        # One squaring makes it non-linear; adding `a` back keeps distinct keys apart.
        return f"(((({a})*({a})%{P})*16807+({a}))%{P})"

    def u(self, x, salt):
        """SQL for a pseudo-random real in [0, 1)."""
        return f"({self.h(x, salt)}/{float(P)})"


def case_cum(expr, cum, values):
    """CASE picking values[i] for the first cumulative bound cum[i] > expr."""
    parts = " ".join(f"WHEN {expr} < {c!r} THEN {v}" for c, v in zip(cum[:-1], values[:-1]))
    return f"(CASE {parts} ELSE {values[-1]} END)"


def iso(col):
    return f"strftime('%Y-%m-%dT%H:%M:%SZ', {col}, 'unixepoch')"


class Runner:
    def __init__(self, db):
        self.db = db
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def step(self, name, *sqls):
        t = time.perf_counter()
        n = 0
        for sql in sqls:
            if EXPLAIN and sql.lstrip().upper().startswith(("INSERT", "WITH", "UPDATE")):
                for row in self.db.execute("EXPLAIN QUERY PLAN " + sql):
                    print("      plan:", row[3])
            before = self.db.total_changes
            self.db.execute(sql)
            n += self.db.total_changes - before
        print(f"  {name:<34} {time.perf_counter() - t:8.1f} s  {n:>12,} rows", flush=True)

    def scalar(self, sql):
        return self.db.execute(sql).fetchone()[0]


def generate(path, members, orders, seed):
    g = Gen(seed)
    u = g.u
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ["journal_mode = OFF", "synchronous = OFF", "locking_mode = EXCLUSIVE", "cache_size = -2000000",
                   "temp_store = FILE"]:
        db.execute(f"PRAGMA {pragma}")
    if db.execute("SELECT COUNT(*) FROM members").fetchone()[0] != 0:
        sys.exit(f"{path} is not empty")
    r = Runner(db)
    # Secondary indexes are built once after the load (same definitions), not row by row.
    indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN "
                         "('members', 'orders', 'refunds', 'refund_lines', 'events', 'ledger_entries')").fetchall()
    for name, _ in indexes:
        db.execute(f"DROP INDEX {name}")
    w0 = END - EVENT_DAYS * DAY

    # Helpers: a numbers table, channels, stores, the catalog.
    r.step("numbers", "CREATE TEMP TABLE nums (n INTEGER PRIMARY KEY)",
           "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < 99999) "
           "INSERT INTO nums SELECT n FROM s")
    ch_map = ", ".join(f"({i}, '{c}', '{p}')" for i, (c, p, _) in enumerate(CHANNELS))
    # The app seeds the channels; the ledger follows rule set version 2: the shipped base rule without growth.
    r.step("stores, rule set",
           "INSERT INTO rule_sets (version, body, created_at, actor) SELECT 2, json_set(body, '$.version', 2, "
           "'$.rules', json_array(json_set(json_extract(body, '$.rules[0]'), '$.growth_per_unit', 0, "
           f"'$.description', '1 point per yuan paid on merchandise'))), {START * US}, 'scale-bench' "
           "FROM rule_sets WHERE version = 1",
           "CREATE TEMP TABLE chans (ch INTEGER PRIMARY KEY, code TEXT NOT NULL, prefix TEXT NOT NULL)",
           f"INSERT INTO chans VALUES {ch_map}",
           "INSERT INTO stores (code, channel, name, city) SELECT 'st' || printf('%02d', n + 1), 'store', "
           "'门店 ' || printf('%02d', n + 1), " + case_cum("(n % 12)", list(range(1, 13)), [f"'{c}'" for c in CITIES])
           + " FROM nums WHERE n < 40")
    leaf_sql = " UNION ALL ".join(
        f"SELECT {i}, '{DEPARTMENTS[i // 6]}/{p}', {price}" for i, (p, price) in enumerate(LEAVES))
    r.step("skus",
           "CREATE TEMP TABLE leaves (leaf INTEGER PRIMARY KEY, path TEXT, price INT)",
           f"INSERT INTO leaves {leaf_sql}",
           "CREATE TEMP TABLE t_sku (idx INTEGER PRIMARY KEY, sku TEXT NOT NULL, price INT NOT NULL)",
           # Price: the leaf's typical price x 0.5 .. 2.0, ending in 9 yuan (x 100 fen).
           f"INSERT INTO t_sku SELECT k.n, 'SKU' || printf('%05d', k.n), "
           f"(CAST(l.price * (0.5 + 1.5 * {u('k.n', 1)}) AS INT) / 10 * 10 + 9) * 100 "
           f"FROM nums k JOIN leaves l ON l.leaf = k.n / {SKUS_PER_LEAF} WHERE k.n < {len(LEAVES) * SKUS_PER_LEAF}",
           f"INSERT INTO skus (sku, name, category_path, brand, list_price, available, updated_at) "
           f"SELECT s.sku, '品牌' || ((s.idx / {SKUS_PER_LEAF}) / 6 * {BRANDS_PER_DEPT} + s.idx % {BRANDS_PER_DEPT} + 1) "
           f"|| ' ' || substr(l.path, instr(l.path, '/') + 1) || ' ' || (s.idx % {SKUS_PER_LEAF} + 1) || '号', "
           f"l.path, '品牌' || ((s.idx / {SKUS_PER_LEAF}) / 6 * {BRANDS_PER_DEPT} + s.idx % {BRANDS_PER_DEPT} + 1), "
           f"s.price, 1, {START * US} FROM t_sku s JOIN leaves l ON l.leaf = s.idx / {SKUS_PER_LEAF}")

    # Members: registrations spread evenly over the three years.
    span = END - START - 2 * DAY
    city = case_cum(u("i", 4), [(k + 1) / 12 for k in range(12)], [f"'{c}'" for c in CITIES])
    reg_ch = case_cum(u("i", 5), [0.35, 0.75, 0.80, 0.88, 0.93, 0.95, 1.0], [f"'{c[0]}'" for c in CHANNELS])
    r.step("members",
           f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {members}) "
           "INSERT INTO members (member_id, status, name_sealed, name_digest, gender, birthday, city, country, "
           "registered_at, registration_channel, consent_sms, consent_email, consent_wechat, consent_push, merged_into, "
           "created_at, updated_at) "
           f"SELECT i, 'active', NULL, NULL, "
           f"CASE WHEN {u('i', 2)} < 0.62 THEN 'female' WHEN {u('i', 2)} < 0.90 THEN 'male' END, "
           f"CASE WHEN {u('i', 3)} < 0.7 THEN date('1960-01-01', '+' || CAST({u('i', 3)} * 14600 / 0.7 AS INT) || ' days') END, "
           f"{city}, 'CN', reg * {US}, {reg_ch}, {u('i', 6)} < 0.6, {u('i', 7)} < 0.3, {u('i', 8)} < 0.8, "
           f"{u('i', 9)} < 0.5, NULL, reg * {US}, reg * {US} "
           f"FROM (SELECT i, {START} + CAST({u('i', 10)} * {span} AS INT) AS reg FROM s)")

    # Each member's buying plan: class, first and last order, weight; then exact order counts.
    cls = case_cum(u("m.member_id", 11), CLASS_CUM, list(range(6)))
    ch_pick = case_cum(u("m.member_id", 12), [sum(c[2] for c in CHANNELS[: k + 1]) for k in range(len(CHANNELS))],
                       list(range(len(CHANNELS))))
    r.step("plan",
           "CREATE TEMP TABLE plan (member_id INTEGER PRIMARY KEY, reg INT, cls INT, t_first INT, t_last INT, w INT, "
           "n INT NOT NULL DEFAULT 0, fav INT, ch INT)",
           f"INSERT INTO plan (member_id, reg, cls, fav, ch) SELECT m.member_id, m.registered_at / {US}, {cls}, "
           f"CAST({u('m.member_id', 13)} * 6 AS INT), {ch_pick} FROM members m",
           # First order within a month (once) or two weeks (others) of registering.
           f"UPDATE plan SET t_first = reg + 600 + CAST({u('member_id', 14)} * {u('member_id', 14)} * "
           f"(CASE WHEN cls = 1 THEN 30 ELSE 14 END) * {DAY} AS INT) WHERE cls > 0",
           f"UPDATE plan SET cls = 0 WHERE cls > 0 AND t_first >= {END - 3600}",
           # Repeat buyers keep buying to the end, or stop after 30 .. 730 days.
           f"UPDATE plan SET t_last = CASE WHEN {u('member_id', 15)} < "
           + case_cum("cls", [2.5, 3.5, 4.5, 9], [repr(x) for x in CLASS_RETAIN[2:]])
           + f" THEN {END - 1} ELSE min({END - 1}, t_first + CAST((30 + 700 * {u('member_id', 16)}) * {DAY} AS INT)) END "
           "WHERE cls >= 2",
           "UPDATE plan SET t_last = t_first WHERE cls = 1",
           f"UPDATE plan SET w = " + case_cum("cls", [2.5, 3.5, 4.5, 9], [str(x) for x in CLASS_WEIGHT[2:]])
           + f" * max(1, (t_last - t_first) / {DAY}) WHERE cls >= 2")
    once = r.scalar("SELECT COUNT(*) FROM plan WHERE cls = 1")
    rep = r.scalar("SELECT COUNT(*) FROM plan WHERE cls >= 2")
    wsum = r.scalar("SELECT SUM(w) FROM plan WHERE cls >= 2")
    rest = orders - once - 2 * rep
    if rest < 0:
        sys.exit("too few orders for the members' plan")
    r.step("order counts",
           "UPDATE plan SET n = 1 WHERE cls = 1",
           "CREATE TEMP TABLE cum AS SELECT member_id, w, SUM(w) OVER (ORDER BY member_id) AS c FROM plan WHERE cls >= 2",
           "CREATE UNIQUE INDEX temp.cum_member ON cum (member_id)",
           f"UPDATE plan SET n = 2 + (SELECT (c * {rest}) / {wsum} - ((c - w) * {rest}) / {wsum} FROM cum "
           "WHERE cum.member_id = plan.member_id) WHERE cls >= 2")

    # Orders in time order (the app gives ids in arrival order): when, channel, lines, first line's category.
    key = "(p.member_id * 8192 + k.n)"
    r.step("order plan (sorted by time)",
           "CREATE TEMP TABLE t_o (order_id INTEGER PRIMARY KEY, member_id INT NOT NULL, placed INT NOT NULL, "
           "ch INT NOT NULL, nl INT NOT NULL, l1 INT NOT NULL)",
           "INSERT INTO t_o (member_id, placed, ch, nl, l1) SELECT p.member_id, "
           f"CASE WHEN k.n = 0 THEN p.t_first ELSE p.t_first + CAST({u(key, 17)} * (p.t_last - p.t_first) AS INT) END AS placed, "
           f"CASE WHEN {u(key, 18)} < 0.75 THEN p.ch ELSE "
           + case_cum(u(key, 19), [sum(c[2] for c in CHANNELS[: i + 1]) for i in range(len(CHANNELS))],
                      list(range(len(CHANNELS)))) + " END, "
           + case_cum(u(key, 20), [0.55, 0.85, 0.95, 1.0], ["1", "2", "3", f"4 + CAST({u(key, 21)} * 3 AS INT)"])
           + ", "
           f"CASE WHEN {u(key, 22)} < 0.6 THEN p.fav * 6 + CAST({u(key, 23)} * 6 AS INT) "
           f"ELSE CAST({u(key, 23)} * 36 AS INT) END "
           "FROM plan p JOIN nums k ON k.n < p.n ORDER BY placed, p.member_id")

    # Lines: the first line in the order's main category; later ones in the same category, its neighbour
    # (face cream then serum), or anywhere. Popularity within a category is skewed (cube of a uniform).
    ol = "(o.order_id * 8 + k.n)"
    leaf = (f"CASE WHEN k.n = 0 THEN o.l1 ELSE CASE WHEN {u(ol, 24)} < 0.35 THEN o.l1 "
            f"WHEN {u(ol, 24)} < 0.60 THEN o.l1 / 6 * 6 + (o.l1 % 6 + 1) % 6 "
            f"ELSE CAST({u(ol, 25)} * 36 AS INT) END END")
    r.step("order_lines",
           "INSERT INTO order_lines (member_id, order_id, line_no, sku, kind, quantity, unit_price, discount, amount) "
           "SELECT x.member_id, x.order_id, x.line_no, s.sku, 'product', x.q, s.price, "
           "CASE WHEN x.dr < 0.15 THEN x.q * s.price / 10 ELSE 0 END, "
           "x.q * s.price - CASE WHEN x.dr < 0.15 THEN x.q * s.price / 10 ELSE 0 END "
           "FROM (SELECT o.member_id, o.order_id, k.n + 1 AS line_no, "
           f"({leaf}) * {SKUS_PER_LEAF} + CAST({u(ol, 26)} * {u(ol, 26)} * {u(ol, 26)} * {SKUS_PER_LEAF} AS INT) AS si, "
           + case_cum(u(ol, 27), [0.82, 0.96, 1.0], ["1", "2", "3"]) + " AS q, "
           f"{u(ol, 28)} AS dr FROM t_o o JOIN nums k ON k.n < o.nl) x "
           "JOIN t_sku s ON s.idx = x.si")

    # Orders: sums of their lines, a coupon on some (order-level discount), shipping on small online orders.
    r.step("orders",
           "INSERT INTO orders (order_id, member_id, channel, order_no, store, status, placed_at, paid_at, currency, "
           "subtotal, discount_total, shipping_fee, total, coupon_code, created_at) "
           "SELECT y.order_id, y.member_id, c.code, c.prefix || strftime('%Y%m%d', y.placed, 'unixepoch') "
           "|| printf('%09d', y.order_id), "
           "CASE WHEN y.ch = 6 THEN 'st' || printf('%02d', 1 + y.member_id % 40) END, "
           f"CASE WHEN y.placed >= {END - 3 * DAY} THEN 'paid' WHEN y.placed >= {END - 12 * DAY} THEN 'shipped' "
           f"ELSE 'completed' END, y.placed * {US}, (y.placed + y.pay) * {US}, 'CNY', y.sub, y.ld + y.od, y.ship, "
           f"y.amt - y.od + y.ship, CASE WHEN y.od > 0 THEN 'CPN' || strftime('%Y%m', y.placed, 'unixepoch') "
           f"|| '-' || (y.od / 100) END, (y.placed + y.pay + 2) * {US} "
           "FROM (SELECT o.order_id, o.member_id, o.placed, o.ch, l.sub, l.ld, l.amt, "
           f"5 + CAST({u('o.order_id', 29)} * 600 AS INT) AS pay, "
           f"CASE WHEN {u('o.order_id', 30)} < 0.12 AND l.amt >= 5000 THEN "
           f"min(l.amt / 5, 1000 + 1000 * CAST({u('o.order_id', 31)} * 3 AS INT)) ELSE 0 END AS od, "
           "CASE WHEN o.ch <> 6 AND l.amt < 9900 THEN 800 ELSE 0 END AS ship "
           "FROM (SELECT order_id, SUM(quantity * unit_price) AS sub, SUM(discount) AS ld, SUM(amount) AS amt "
           "FROM order_lines GROUP BY order_id) l JOIN t_o o ON o.order_id = l.order_id) y "
           "JOIN chans c ON c.ch = y.ch")

    # Refunds: ~3 % of orders, wholly, an hour to two weeks after they were placed (as `lines: []` does).
    reason = case_cum(u("r.refund_id", 33), [0.4, 0.7, 0.85, 1.0], ["'不想要了'", "'质量问题'", "'发错货'", "NULL"])
    r.step("refunds and refund_lines",
           "CREATE TEMP TABLE t_rf (refund_id INTEGER PRIMARY KEY, order_id INT NOT NULL, at INT NOT NULL)",
           "INSERT INTO t_rf (order_id, at) SELECT order_id, at FROM (SELECT order_id, "
           f"placed + 3600 + CAST({u('order_id', 32)} * {u('order_id', 32)} * 14 * {DAY} AS INT) AS at FROM t_o "
           f"WHERE {u('order_id', 34)} < 0.03) WHERE at < {END} ORDER BY at, order_id",
           "INSERT INTO refund_lines (member_id, refund_id, idx, order_id, line_no, sku, quantity, amount) "
           "SELECT l.member_id, r.refund_id, l.line_no - 1, l.order_id, l.line_no, l.sku, l.quantity, l.amount "
           "FROM t_rf r JOIN order_lines l ON l.order_id = r.order_id ORDER BY r.refund_id, l.line_no",
           "INSERT INTO refunds (refund_id, member_id, channel, refund_no, order_id, refunded_at, shipping_refund, "
           "amount, reason, created_at) "
           "SELECT r.refund_id, o.member_id, o.channel, 'R' || o.order_no, o.order_id, r.at * " + str(US) + ", "
           "o.shipping_fee, (SELECT SUM(amount) FROM refund_lines WHERE refund_id = r.refund_id) + o.shipping_fee, "
           f"{reason}, r.at * {US} FROM t_rf r JOIN orders o ON o.order_id = r.order_id ORDER BY r.refund_id")

    # The points ledger: 1 point per yuan of each product line, available at once, never expiring.
    # The request keeps the kernel's field order (tag first); the source column is a JSON value (keys sorted).
    src = "'{\"line_no\":' || l.line_no || ',\"order_id\":' || l.order_id || ',\"type\":\"order_line\"}'"
    req_src = "'{\"type\":\"order_line\",\"order_id\":' || l.order_id || ',\"line_no\":' || l.line_no || '}'"
    op = "'order:' || l.order_id || ':' || l.line_no || ':points'"
    r.step("ledger: order earnings",
           "INSERT INTO ledger_entries (member_id, entry_key, op, request, wallet, amount, kind, state, available_at, "
           "source, at, lot, expires_at) "
           f"SELECT l.member_id, {op} || '#0', {op}, "
           "'{\"op\":\"earn\",\"wallet\":\"points\",\"amount\":' || (l.amount / 100) || ',\"source\":' || " + req_src
           + f" || ',\"at\":\"' || {iso('o.placed')} || '\"}}', "
           f"'points', l.amount / 100, 'earn', 'available', NULL, {src}, o.placed * {US}, {op} || '#0', NULL "
           "FROM order_lines l JOIN t_o o ON o.order_id = l.order_id WHERE l.amount >= 100")
    r.step("ledger: refund reversals",
           "CREATE TEMP TABLE t_rv AS SELECT r.refund_id, r.order_id, r.at, "
           "'{\"op\":\"reverse\",\"order_id\":' || r.order_id || ',\"lines\":[' || (SELECT group_concat(j, ',') FROM "
           "(SELECT '{\"line_no\":' || line_no || ',\"refunded_quantity\":' || quantity || ',\"line_quantity\":' "
           "|| quantity || '}' AS j FROM refund_lines WHERE refund_id = r.refund_id ORDER BY idx)) || '],\"at\":\"' "
           f"|| {iso('r.at')} || '\"}}' AS request FROM t_rf r",
           "INSERT INTO ledger_entries (member_id, entry_key, op, request, wallet, amount, kind, state, available_at, "
           "source, at, lot, expires_at) "
           "SELECT l.member_id, 'refund:' || v.refund_id || '#' || (row_number() OVER (PARTITION BY v.refund_id "
           "ORDER BY l.line_no) - 1), 'refund:' || v.refund_id, v.request, 'points', -(l.amount / 100), 'reverse', "
           f"'available', NULL, {src}, v.at * {US}, {op} || '#0', NULL "
           "FROM t_rv v JOIN order_lines l ON l.order_id = v.order_id WHERE l.amount >= 100 "
           "ORDER BY v.refund_id, l.line_no")
    # Some members redeem once, spending from their earliest lot (untouched by refunds) 1 to 60 days later.
    rsrc = "'{\"reward_id\":\"' || x.reward || '\",\"type\":\"reward\"}'"
    req_rsrc = "'{\"type\":\"reward\",\"reward_id\":\"' || x.reward || '\"}'"
    r.step("ledger: redemptions",
           "INSERT INTO ledger_entries (member_id, entry_key, op, request, wallet, amount, kind, state, available_at, "
           "source, at, lot, expires_at) "
           "SELECT x.member_id, 'redeem:rd-' || x.member_id || '#0', 'redeem:rd-' || x.member_id, "
           "'{\"op\":\"redeem\",\"amount\":' || x.cost || ',\"source\":' || " + req_rsrc + " || ',\"at\":\"' || "
           f"{iso('x.at')} || '\"}}', 'points', -x.cost, 'redeem', 'available', NULL, {rsrc}, x.at * {US}, x.lot, NULL "
           # A member's first lot is line 1 of their first order (every line earns: prices start at 19 yuan).
           "FROM (SELECT f.member_id, 'order:' || f.order_id || ':1:points#0' AS lot, l.amount / 100 AS lot_points, "
           f"o.placed + {DAY} + CAST({u('f.member_id', 35)} * 59 * {DAY} AS INT) AS at, "
           + case_cum(u("f.member_id", 36), [0.5, 0.8, 1.0], ["100", "200", "500"]) + " AS cost, "
           + case_cum(u("f.member_id", 37), [0.5, 0.8, 1.0], ["'rw-coffee-voucher'", "'rw-tote-bag'", "'rw-coupon-50'"])
           + " AS reward FROM (SELECT member_id, MIN(order_id) AS order_id FROM t_o GROUP BY member_id) f "
           "JOIN t_o o ON o.order_id = f.order_id JOIN order_lines l ON l.order_id = f.order_id AND l.line_no = 1 "
           f"WHERE {u('f.member_id', 38)} < 0.06 AND f.order_id NOT IN (SELECT order_id FROM t_rf)) x "
           f"WHERE x.lot_points >= x.cost AND x.at < {END} ORDER BY x.at, x.member_id")

    # Events of the last EVENT_DAYS days, gathered in t_ev then stored in time order.
    r.step("events: purchase sessions",
           "CREATE TEMP TABLE t_ev (member_id INT NOT NULL, at INT NOT NULL, type TEXT NOT NULL, session TEXT, "
           "channel TEXT NOT NULL, sku TEXT, props TEXT NOT NULL)",
           # Orders placed in the brand's own channels: all check out and purchase; half were tracked from the views.
           "INSERT INTO t_ev SELECT l.member_id, (o.placed - (o.nl - l.line_no + 1) * 150 - 60 + e.n * 40) * 1000000, "
           "CASE e.n WHEN 0 THEN 'product_view' ELSE 'add_to_cart' END, 'p' || o.order_id, c.code, l.sku, "
           "CASE e.n WHEN 0 THEN '{}' ELSE '{\"quantity\":' || l.quantity || '}' END "
           f"FROM t_o o JOIN chans c ON c.ch = o.ch JOIN order_lines l ON l.order_id = o.order_id "
           f"JOIN nums e ON e.n < 2 WHERE o.placed >= {w0 + 3600} AND o.ch IN {OWNED} AND {u('o.order_id', 60)} < 0.5",
           "INSERT INTO t_ev SELECT o.member_id, o.placed * 1000000 - 30000000 * (1 - e.n), "
           "CASE e.n WHEN 0 THEN 'checkout' ELSE 'purchase' END, 'p' || o.order_id, c.code, NULL, "
           "CASE e.n WHEN 0 THEN '{\"items\":' || o.nl || '}' ELSE '{\"amount\":' || d.total || ',\"order_no\":\"' "
           "|| d.order_no || '\"}' END "
           f"FROM t_o o JOIN chans c ON c.ch = o.ch JOIN orders d ON d.order_id = o.order_id JOIN nums e ON e.n < 2 "
           f"WHERE o.placed >= {w0 + 3600} AND o.ch IN {OWNED}",
           # Some leave a review a few days later.
           "INSERT INTO t_ev SELECT o.member_id, (o.placed + 3 * 86400 + CAST(" + u("o.order_id", 39) + " * 4 * 86400 AS INT)) "
           "* 1000000, 'custom.review', NULL, c.code, NULL, '{\"order_no\":\"' || d.order_no || '\",\"text\":\"' || "
           + case_cum(u("o.order_id", 40), [(k + 1) / len(REVIEWS) for k in range(len(REVIEWS))],
                      [f"'{t}'" for t in REVIEWS]) + " || '\"}' "
           f"FROM t_o o JOIN chans c ON c.ch = o.ch JOIN orders d ON d.order_id = o.order_id "
           f"WHERE o.placed >= {w0 + 3600} AND o.ch IN {OWNED} AND {u('o.order_id', 41)} < 0.03 "
           f"AND o.placed + 7 * 86400 < {END}")

    # Browsing: members active in the window (buyers whose buying span reaches it, recent sign-ups).
    online = f"(CASE WHEN p.ch IN {OWNED} THEN p.ch ELSE 1 END)"
    r.step("events: browsing sessions",
           "CREATE TEMP TABLE t_bs (sid INTEGER PRIMARY KEY, member_id INT NOT NULL, at INT NOT NULL, ch INT NOT NULL, "
           "fav INT NOT NULL)",
           f"INSERT INTO t_bs (member_id, at, ch, fav) SELECT p.member_id, "
           f"max(p.reg, {w0}) + 60 + CAST({u('(p.member_id * 512 + k.n)', 42)} * "
           f"(min({END}, coalesce(p.t_last, p.reg) + 30 * {DAY}) - max(p.reg, {w0}) - 3600) AS INT), {online}, p.fav "
           "FROM plan p JOIN nums k ON k.n < CAST("
           + case_cum("p.cls", [0.5, 1.5, 2.5, 3.5, 4.5, 9], [repr(x) for x in CLASS_BROWSE])
           + f" * 2 * {u('p.member_id', 43)} * (min({END}, coalesce(p.t_last, p.reg) + 30 * {DAY}) - max(p.reg, {w0})) "
           f"/ {EVENT_DAYS * DAY}.0 + {u('p.member_id', 59)} AS INT) "
           f"WHERE coalesce(p.t_last, p.reg) + 30 * {DAY} > {w0} AND (p.cls > 0 OR p.reg >= {w0})",
           # A landing page, one to four product views, sometimes a cart, rarely a checkout that is abandoned.
           "INSERT INTO t_ev SELECT b.member_id, b.at * 1000000, 'page_view', 'b' || b.sid, c.code, NULL, "
           "'{\"url\":\"/category/' || (b.fav + 1) || '\"}' FROM t_bs b JOIN chans c ON c.ch = b.ch",
           f"INSERT INTO t_ev SELECT b.member_id, (b.at + 20 + k.n * 45) * 1000000, 'product_view', 'b' || b.sid, "
           f"c.code, s.sku, '{{}}' FROM t_bs b JOIN chans c ON c.ch = b.ch JOIN nums k "
           f"ON k.n < 1 + CAST({u('b.sid', 44)} * 4 AS INT) JOIN t_sku s ON s.idx = "
           f"(CASE WHEN {u('(b.sid * 8 + k.n)', 45)} < 0.6 THEN b.fav * 6 + CAST({u('(b.sid * 8 + k.n)', 46)} * 6 AS INT) "
           f"ELSE CAST({u('(b.sid * 8 + k.n)', 46)} * 36 AS INT) END) * {SKUS_PER_LEAF} "
           f"+ CAST({u('(b.sid * 8 + k.n)', 47)} * {u('(b.sid * 8 + k.n)', 47)} * {u('(b.sid * 8 + k.n)', 47)} "
           f"* {SKUS_PER_LEAF} AS INT)",
           f"INSERT INTO t_ev SELECT v.member_id, v.at + 30000000, 'add_to_cart', v.session, v.channel, v.sku, "
           "'{\"quantity\":1}' FROM (SELECT member_id, session, channel, sku, MAX(at) AS at FROM t_ev "
           f"WHERE type = 'product_view' AND session LIKE 'b%' GROUP BY session) v "
           f"WHERE {u('CAST(substr(v.session, 2) AS INT)', 48)} < 0.30",
           f"INSERT INTO t_ev SELECT a.member_id, a.at + 45000000, 'checkout', a.session, a.channel, NULL, "
           "'{\"items\":1}' FROM t_ev a WHERE a.type = 'add_to_cart' AND a.session LIKE 'b%' "
           f"AND {u('CAST(substr(a.session, 2) AS INT)', 49)} < 0.25")

    # Check-in streaks in the app or mini-program, campaigns and their clicks.
    r.step("events: check-ins and campaigns",
           f"INSERT INTO t_ev SELECT p.member_id, ((s.d + k.n) * {DAY} + 7 * 3600 + "
           f"CAST({u('(p.member_id * 64 + k.n)', 50)} * 14 * 3600 AS INT)) * 1000000, 'check_in', NULL, "
           "CASE p.ch WHEN 0 THEN 'app' ELSE 'mini_program' END, NULL, '{}' "
           f"FROM (SELECT member_id, {w0 // DAY} + CAST({u('member_id', 51)} * ({EVENT_DAYS} - 30) AS INT) AS d, "
           f"1 + CAST({u('member_id', 52)} * 29 AS INT) AS len FROM plan "
           f"WHERE cls >= 3 AND ch IN (0, 1) AND t_last > {w0} AND {u('member_id', 53)} < 0.5) s "
           "JOIN plan p ON p.member_id = s.member_id JOIN nums k ON k.n < s.len",
           f"INSERT INTO t_ev SELECT p.member_id, ({w0} + (10 + 21 * c.n) * {DAY} + 36000 + "
           f"CAST({u('(p.member_id * 16 + c.n)', 54)} * 36000 AS INT)) * 1000000, 'campaign_open', NULL, "
           f"(SELECT code FROM chans WHERE ch = {online}), NULL, "
           "'{\"campaign_id\":\"c' || (c.n + 1) || '\",\"medium\":\"' || CASE WHEN "
           + u("(p.member_id * 16 + c.n)", 55) + " < 0.5 THEN 'wechat' WHEN "
           + u("(p.member_id * 16 + c.n)", 55) + " < 0.8 THEN 'sms' ELSE 'push' END || '\"}' "
           f"FROM plan p JOIN nums c ON c.n < 5 WHERE p.cls > 0 AND coalesce(p.t_last, p.reg) + 60 * {DAY} > {w0} "
           f"AND {u('(p.member_id * 16 + c.n)', 56)} < 0.15",
           "INSERT INTO t_ev SELECT member_id, at + (5 + CAST(" + u("(member_id * 16 + length(props))", 57)
           + " * 600 AS INT)) * 1000000, 'campaign_click', NULL, channel, NULL, "
           "'{\"campaign_id\":' || json_quote(json_extract(props, '$.campaign_id')) || ',\"url\":\"/campaign/' || "
           "json_extract(props, '$.campaign_id') || '\"}' FROM t_ev WHERE type = 'campaign_open' AND "
           + u("(member_id * 16 + length(props) + at % 1000)", 58) + " < 0.3")

    r.step("events (stored in time order)",
           f"DELETE FROM t_ev WHERE at >= {END * US} OR at < {w0 * US}",
           # Ids in arrival order; the key is the caller's event id, as a tracking SDK sends it.
           "INSERT INTO events (event_id, member_id, event_key, event_type, occurred_at, anonymous_id, session_id, "
           "channel, sku, properties, received_at) SELECT id, member_id, 'ev-' || id, type, at, NULL, session, channel, "
           "sku, props, at + 1500000 FROM (SELECT row_number() OVER (ORDER BY at, member_id, type, sku) AS id, * "
           "FROM t_ev) ORDER BY id")
    r.step("secondary indexes", *[sql for _, sql in indexes])
    db.execute("PRAGMA journal_mode = WAL")
    db.close()
    print(f"  {'total':<34} {time.perf_counter() - r.t0:8.1f} s  (generator CPU {time.process_time() - r.cpu0:.1f} s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db", help="a freshly migrated SQLite file")
    ap.add_argument("--members", type=int, default=1_000_000)
    ap.add_argument("--orders", type=int, default=20_000_000)
    ap.add_argument("--seed", type=int, default=20261031)
    a = ap.parse_args()
    generate(a.db, a.members, a.orders, a.seed)


if __name__ == "__main__":
    main()
