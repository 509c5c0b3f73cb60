//! The demo brand group's catalog and stores: a category tree, forty (fictional) brands in three price
//! tiers, about two thousand SKUs, and twenty physical stores in Chinese cities.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::stream;
use crate::commerce::{Sku, StoreLocation};

/// Top-level departments; members have affinities for these.
pub const DEPARTMENTS: [&str; 6] = ["美妆", "个护", "母婴", "食品", "服饰", "家居"];

/// Leaf categories: (department index, path below it, typical list price in yuan, search words).
const LEAVES: [(usize, &str, u32, &str); 36] = [
    (0, "护肤/面霜", 320, "面霜 保湿"),
    (0, "护肤/精华", 420, "精华 抗老"),
    (0, "护肤/面膜", 99, "面膜 补水"),
    (0, "护肤/洁面", 89, "洁面 氨基酸"),
    (0, "护肤/防晒", 139, "防晒 清爽"),
    (0, "彩妆/口红", 199, "口红 显白"),
    (0, "彩妆/粉底", 269, "粉底液 持妆"),
    (0, "彩妆/眼影", 189, "眼影盘 大地色"),
    (0, "香水", 580, "香水 淡香"),
    (1, "洗发", 69, "洗发水 控油"),
    (1, "沐浴", 59, "沐浴露 香氛"),
    (1, "口腔", 39, "牙膏 美白"),
    (1, "身体护理", 79, "身体乳 保湿"),
    (1, "剃须", 129, "剃须刀 男士"),
    (2, "奶粉", 328, "奶粉 1段"),
    (2, "纸尿裤", 149, "纸尿裤 拉拉裤"),
    (2, "辅食", 49, "米粉 辅食"),
    (2, "童装", 159, "童装 纯棉"),
    (2, "玩具", 119, "益智 玩具"),
    (3, "零食/坚果", 79, "坚果 礼盒"),
    (3, "零食/饼干", 29, "饼干 低糖"),
    (3, "茶饮/茶叶", 168, "茶叶 明前"),
    (3, "茶饮/咖啡", 89, "咖啡 挂耳"),
    (3, "粮油/大米", 59, "大米 东北"),
    (3, "生鲜/水果", 69, "水果 当季"),
    (4, "女装/连衣裙", 299, "连衣裙 法式"),
    (4, "女装/T恤", 99, "T恤 纯棉"),
    (4, "女装/外套", 499, "外套 通勤"),
    (4, "男装/衬衫", 229, "衬衫 免烫"),
    (4, "男装/夹克", 459, "夹克 休闲"),
    (4, "鞋靴/运动鞋", 399, "运动鞋 轻便"),
    (4, "箱包/双肩包", 259, "双肩包 通勤"),
    (5, "床品/四件套", 359, "四件套 全棉"),
    (5, "厨具/锅具", 279, "不粘锅 炒锅"),
    (5, "收纳", 59, "收纳箱 衣柜"),
    (5, "清洁", 45, "洗衣液 除菌"),
];

/// Fictional brands per department with a price tier: 0 budget, 1 mid, 2 premium.
const BRANDS: [(usize, &str, u8); 40] = [
    (0, "澜蔻", 2),
    (0, "初禾", 1),
    (0, "悦颜", 1),
    (0, "清研", 0),
    (0, "玉兰集", 2),
    (0, "木槿", 0),
    (0, "雪域", 1),
    (0, "赫曼", 2),
    (1, "洁然", 0),
    (1, "沐森", 1),
    (1, "白露", 0),
    (1, "锋度", 1),
    (1, "芳泽", 2),
    (2, "贝亲爱", 1),
    (2, "小鹿宝", 0),
    (2, "安儿乐", 1),
    (2, "启蒙星", 0),
    (2, "澳纯", 2),
    (3, "山野集", 1),
    (3, "果仁坊", 0),
    (3, "茗川", 2),
    (3, "晨豆", 1),
    (3, "北仓", 0),
    (3, "鲜丰", 1),
    (3, "良食记", 0),
    (4, "素衣", 1),
    (4, "南风", 0),
    (4, "墨序", 2),
    (4, "轻野", 1),
    (4, "步履", 1),
    (4, "城迹", 2),
    (4, "棉舍", 0),
    (4, "简行", 0),
    (5, "栖居", 1),
    (5, "禾木", 0),
    (5, "匠心坊", 2),
    (5, "净界", 0),
    (5, "暖巢", 1),
    (5, "方寸", 1),
    (5, "素造", 2),
];

const ADJECTIVES: [&str; 16] = [
    "经典",
    "臻选",
    "轻盈",
    "焕活",
    "柔润",
    "特润",
    "清透",
    "修护",
    "元气",
    "匠心",
    "至臻",
    "小金",
    "小白",
    "新款",
    "家庭装",
    "限定",
];

/// Stores: (code, name, city).
const STORES: [(&str, &str, &str); 20] = [
    ("sh_jingan", "上海静安嘉里中心店", "上海"),
    ("sh_xujiahui", "上海徐家汇港汇店", "上海"),
    ("sh_pudong", "上海浦东正大广场店", "上海"),
    ("bj_sanlitun", "北京三里屯太古里店", "北京"),
    ("bj_guomao", "北京国贸商城店", "北京"),
    ("bj_xidan", "北京西单大悦城店", "北京"),
    ("gz_tianhe", "广州天河正佳广场店", "广州"),
    ("gz_beijinglu", "广州北京路店", "广州"),
    ("sz_futian", "深圳福田COCO Park店", "深圳"),
    ("sz_nanshan", "深圳南山万象天地店", "深圳"),
    ("hz_hubin", "杭州湖滨银泰店", "杭州"),
    ("hz_xixi", "杭州西溪印象城店", "杭州"),
    ("cd_taikooli", "成都远洋太古里店", "成都"),
    ("cd_chunxi", "成都春熙路店", "成都"),
    ("nj_xinjiekou", "南京新街口德基店", "南京"),
    ("wh_jianghan", "武汉江汉路店", "武汉"),
    ("cq_jiefangbei", "重庆解放碑店", "重庆"),
    ("xa_xiaozhai", "西安小寨赛格店", "西安"),
    ("sz_suzhou_center", "苏州中心店", "苏州"),
    ("cs_wuyi", "长沙五一广场店", "长沙"),
];

/// One SKU with what the generator needs to pick it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub sku: String,
    pub leaf: usize,
    pub brand: usize,
    pub tier: u8,
    pub list_price: i64,
}

/// The catalog: SKUs as the store takes them, plus indexes for picking by department, leaf and brand.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub skus: Vec<Sku>,
    pub items: Vec<Item>,
    /// Item indexes per leaf.
    pub by_leaf: Vec<Vec<usize>>,
    /// Leaf indexes per department.
    pub leaves_of: Vec<Vec<usize>>,
    pub stores: Vec<StoreLocation>,
}

/// The department a leaf category belongs to.
pub fn department_of(leaf: usize) -> usize {
    LEAVES[leaf].0
}

/// What shoppers type when looking for a leaf's products.
pub fn search_words(leaf: usize) -> &'static str {
    LEAVES[leaf].3
}

/// The last segment of a leaf's path (`面霜`).
pub fn leaf_name(leaf: usize) -> &'static str {
    LEAVES[leaf].1.rsplit('/').next().unwrap_or(LEAVES[leaf].1)
}

/// A brand's display name.
pub fn brand_name(brand: usize) -> &'static str {
    BRANDS[brand].1
}

/// Brand indexes of a department.
pub fn brands_of(department: usize) -> Vec<usize> {
    (0..BRANDS.len()).filter(|b| BRANDS[*b].0 == department).collect()
}

/// A brand's price tier: 0 budget, 1 mid, 2 premium.
pub fn brand_tier(brand: usize) -> u8 {
    BRANDS[brand].2
}

/// A believable shelf price in fen: x9 or x9.9 yuan endings.
fn shelf_price(yuan: f64) -> i64 {
    let y = yuan.max(5.0);
    if y < 100.0 { (y.floor() as i64) * 100 + 90 } else { ((y / 10.0).floor() as i64 * 10 + 9) * 100 }
}

impl Catalog {
    /// About `per_leaf × 36` SKUs; deterministic in `seed`.
    pub fn new(seed: u64, per_leaf: usize) -> Catalog {
        let mut rng = ChaCha8Rng::seed_from_u64(stream(seed, 0, 0xCA7A));
        let mut skus = Vec::new();
        let mut items = Vec::new();
        let mut by_leaf = vec![Vec::new(); LEAVES.len()];
        let mut leaves_of = vec![Vec::new(); DEPARTMENTS.len()];
        for (leaf, (dept, path, base, _)) in LEAVES.iter().enumerate() {
            leaves_of[*dept].push(leaf);
            let brands = brands_of(*dept);
            let count = per_leaf / 2 + rng.random_range(0..=per_leaf);
            for n in 0..count {
                let brand = *brands.choose(&mut rng).unwrap_or(&0);
                let tier = BRANDS[brand].2;
                let factor = [0.55, 1.0, 1.9][tier as usize] * rng.random_range(0.7..1.4);
                let list_price = shelf_price(f64::from(*base) * factor);
                let sku = format!("HY{leaf:02}{n:04}");
                let adjective = ADJECTIVES.choose(&mut rng).unwrap_or(&"经典");
                let name = format!("{} {}{} {}号", BRANDS[brand].1, adjective, leaf_name(leaf), n % 9 + 1);
                by_leaf[leaf].push(items.len());
                items.push(Item { sku: sku.clone(), leaf, brand, tier, list_price });
                skus.push(Sku {
                    sku,
                    name,
                    category_path: Some(format!("{}/{path}", DEPARTMENTS[*dept])),
                    brand: Some(BRANDS[brand].1.to_string()),
                    list_price,
                    // A few SKUs are discontinued but still appear in old orders.
                    available: rng.random::<f64>() > 0.04,
                });
            }
        }
        let stores = STORES
            .iter()
            .map(|(code, name, city)| StoreLocation {
                code: (*code).to_string(),
                channel: "store".into(),
                name: (*name).to_string(),
                city: Some((*city).to_string()),
            })
            .collect();
        Catalog { skus, items, by_leaf, leaves_of, stores }
    }

    /// The store a member in `city` shops at, if the city has one; otherwise a flagship.
    pub fn store_for(&self, city: &str, pick: usize) -> &StoreLocation {
        let local: Vec<&StoreLocation> = self.stores.iter().filter(|s| s.city.as_deref() == Some(city)).collect();
        if local.is_empty() { &self.stores[pick % self.stores.len()] } else { local[pick % local.len()] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_valid_and_deterministic() {
        let a = Catalog::new(42, 56);
        assert_eq!(a.skus, Catalog::new(42, 56).skus);
        assert!((1500..2600).contains(&a.skus.len()), "{}", a.skus.len());
        assert_eq!(a.stores.len(), 20);
        for s in &a.skus {
            s.validate().unwrap();
            assert!(s.list_price > 0);
        }
        for s in &a.stores {
            s.validate().unwrap();
        }
        let brands: std::collections::HashSet<_> = a.skus.iter().filter_map(|s| s.brand.clone()).collect();
        assert!(brands.len() >= 38);
    }
}
