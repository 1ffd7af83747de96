//! The shop's data the agent may read, and the tools that read it.
//!
//! The model only ever sees what a tool returns, so the tools are where the agent's
//! answers are grounded: a product it names exists, a price it quotes is the catalogue's.
//! A call with bad arguments gets an error the model can read and correct; a shopper
//! asking for someone else's order learns nothing about it.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::llm::ToolSpec;
use crate::words::excerpt;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub id: String,
    pub title: String,
    /// Titles in other languages, by BCP 47 tag.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub titles: BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
    pub price_minor: i64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    pub product_id: String,
    pub title: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    pub id: String,
    /// The identity of the shopper who placed it; only they may ask about it.
    pub buyer: String,
    pub status: String,
    pub items: Vec<OrderLine>,
    pub total_minor: i64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<String>,
}

impl From<souk_proto::commerce::Order> for Order {
    /// A flash-sale order is paid from the wallet when it is placed; its shipping is
    /// the merchant's and not known here.
    fn from(sold: souk_proto::commerce::Order) -> Order {
        Order {
            id: sold.order_id,
            buyer: sold.buyer,
            status: "paid".into(),
            items: vec![OrderLine {
                product_id: sold.product_id,
                title: sold.title,
                quantity: u32::try_from(sold.quantity).unwrap_or(u32::MAX),
            }],
            total_minor: sold.amount_minor,
            currency: sold.currency,
            carrier: None,
            tracking: None,
            eta: None,
        }
    }
}

/// The catalogue and orders, loaded once at start, and the orders of live sales, looked
/// up as they are asked for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shop {
    #[serde(default)]
    pub products: Vec<Product>,
    #[serde(default)]
    pub orders: Vec<Order>,
    #[serde(skip)]
    pub sale_orders: Option<Arc<dyn SaleOrders>>,
}

/// Orders a shopper placed in a live room's flash sale. They are kept by the server's
/// ledger, not in the shop's file, and arrive while the agent runs.
pub trait SaleOrders: Send + Sync {
    /// The order with this id, whoever bought it; `Ok(None)` when there is none, `Err`
    /// when the orders cannot be read now.
    fn find<'a>(&'a self, order_id: &'a str) -> OrderLookup<'a>;
}

pub type OrderLookup<'a> = Pin<Box<dyn Future<Output = Result<Option<Order>, String>> + Send + 'a>>;

impl std::fmt::Debug for dyn SaleOrders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SaleOrders")
    }
}

/// Most products one search returns: enough to choose from, few enough to read out.
const MAX_RESULTS: usize = 5;
const MAX_QUERY_CHARS: usize = 200;

/// What running a tool produced.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolOutcome {
    /// JSON for the model.
    Result(Value),
    /// The model asked for a person; the conversation is handed over.
    Handoff { reason: String },
}

/// A small sample shop (shoes, an abaya, a bag, earbuds and two orders) for the demo pages.
pub const DEMO_SHOP: &str = include_str!("../demo-shop.json");

impl Shop {
    /// Reads the shop's data: a JSON file `{"products": [...], "orders": [...]}` or a CSV
    /// catalogue (see [`crate::shop_csv`]), and, if given, a CSV of orders besides.
    pub fn load(data: &Path, orders: Option<&Path>) -> Result<Shop, String> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|e| format!("reading the shop data {}: {e}", path.display()))
        };
        let invalid =
            |path: &Path, e: String| format!("the shop data {} is invalid: {e}", path.display());
        let is_csv = |path: &Path| {
            path.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        };
        let mut shop = if is_csv(data) {
            let products = crate::shop_csv::products(&read(data)?).map_err(|e| invalid(data, e))?;
            Shop {
                products,
                ..Shop::default()
            }
        } else {
            serde_json::from_str(&read(data)?).map_err(|e| invalid(data, e.to_string()))?
        };
        if let Some(path) = orders {
            if !is_csv(path) {
                return Err(format!(
                    "the orders file {} must be CSV (.csv)",
                    path.display()
                ));
            }
            let more = crate::shop_csv::orders(&read(path)?).map_err(|e| invalid(path, e))?;
            shop.orders.extend(more);
        }
        shop.check().map_err(|e| invalid(data, e))?;
        Ok(shop)
    }

    pub fn parse(text: &str) -> Result<Shop, String> {
        let shop: Shop = serde_json::from_str(text).map_err(|e| e.to_string())?;
        shop.check()?;
        Ok(shop)
    }

    fn check(&self) -> Result<(), String> {
        match self.products.iter().find(|p| p.price_minor < 0) {
            Some(p) => Err(format!("product '{}' has a negative price", p.id)),
            None => Ok(()),
        }
    }

    /// The tools the model is offered.
    pub fn tools() -> Vec<ToolSpec> {
        vec![
            ToolSpec {
                name: "search_catalog",
                description: "Search the shop's catalogue. Returns matching products with price, currency, stock and link.",
                parameters: json!({"type": "object", "properties": {
                    "query": {"type": "string", "description": "what the shopper is looking for, in their words"},
                    "locale": {"type": "string", "description": "the shopper's language as a BCP 47 tag, e.g. ar, pt-BR"},
                }, "required": ["query"]}),
            },
            ToolSpec {
                name: "get_order",
                description: "Look up one of the shopper's orders by its id: status, items, total, carrier, tracking and delivery estimate.",
                parameters: json!({"type": "object", "properties": {
                    "order_id": {"type": "string"},
                }, "required": ["order_id"]}),
            },
            ToolSpec {
                name: "transfer_to_human",
                description: "Hand the conversation to a human member of staff, when the shopper asks for a person or you cannot help.",
                parameters: json!({"type": "object", "properties": {
                    "reason": {"type": "string", "description": "why, in one sentence, for the staff member"},
                }, "required": ["reason"]}),
            },
        ]
    }

    /// Runs tool `name` for `shopper` with the model's JSON `arguments`.
    pub async fn call(&self, name: &str, arguments: &str, shopper: &str) -> ToolOutcome {
        let args: Value = match serde_json::from_str(arguments) {
            Ok(Value::Object(map)) => Value::Object(map),
            Ok(_) | Err(_) => {
                return tool_error(
                    "invalid_arguments",
                    format!(
                        "the arguments must be a JSON object, got: {}",
                        excerpt(arguments, 80)
                    ),
                )
            }
        };
        let text = |key: &str| args.get(key).and_then(Value::as_str).map(str::trim);
        match name {
            "search_catalog" => match text("query") {
                Some(q) if !q.is_empty() && q.chars().count() <= MAX_QUERY_CHARS => {
                    ToolOutcome::Result(self.search(q, text("locale")))
                }
                _ => tool_error(
                    "invalid_arguments",
                    format!("search_catalog needs a non-empty string 'query' of at most {MAX_QUERY_CHARS} characters"),
                ),
            },
            "get_order" => match text("order_id") {
                Some(id) if !id.is_empty() => ToolOutcome::Result(self.order(id, shopper).await),
                _ => tool_error("invalid_arguments", "get_order needs a string 'order_id'"),
            },
            "transfer_to_human" => ToolOutcome::Handoff {
                reason: text("reason")
                    .filter(|r| !r.is_empty())
                    .unwrap_or("the shopper asked for a person")
                    .chars()
                    .take(300)
                    .collect(),
            },
            other => tool_error(
                "unknown_tool",
                format!("there is no tool '{}'; the tools are search_catalog, get_order and transfer_to_human", excerpt(other, 80)),
            ),
        }
    }

    fn search(&self, query: &str, locale: Option<&str>) -> Value {
        let terms = search_terms(query);
        let mut scored: Vec<(usize, &Product)> = self
            .products
            .iter()
            .map(|p| {
                let haystack = format!(
                    "{} {} {} {}",
                    p.title,
                    p.titles.values().cloned().collect::<Vec<_>>().join(" "),
                    p.description,
                    p.tags.join(" ")
                )
                .to_lowercase();
                (
                    terms
                        .iter()
                        .filter(|t| haystack.contains(t.as_str()))
                        .count(),
                    p,
                )
            })
            .filter(|(score, _)| *score > 0)
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        let results: Vec<Value> = scored
            .into_iter()
            .take(MAX_RESULTS)
            .map(|(_, p)| {
                let title = locale
                    .and_then(|l| {
                        p.titles
                            .get(l)
                            .or_else(|| p.titles.get(l.split('-').next()?))
                    })
                    .unwrap_or(&p.title);
                json!({
                    "id": p.id, "title": title, "description": p.description,
                    "price_minor": p.price_minor, "currency": p.currency,
                    "in_stock": p.stock.map(|s| s > 0), "url": p.url,
                })
            })
            .collect();
        if results.is_empty() {
            json!({"results": [], "note": "no product matches; ask the shopper to describe it differently"})
        } else {
            json!({"results": results, "note": "prices are in minor units of the currency"})
        }
    }

    async fn order(&self, id: &str, shopper: &str) -> Value {
        let mut order = self
            .orders
            .iter()
            .find(|o| o.id.eq_ignore_ascii_case(id))
            .cloned();
        if let (None, Some(sale_orders)) = (&order, &self.sale_orders) {
            order = match sale_orders.find(id).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(error = %e, "live-sale orders cannot be read");
                    return json!({"error": {"code": "orders_unavailable", "message":
                        "orders cannot be looked up right now; apologise and offer to pass the question to a person"}});
                }
            };
        }
        match order {
            Some(order) if order.buyer == shopper => json!({"order": order}),
            // Someone else's order reads exactly like a missing one.
            _ => json!({"error": {"code": "order_not_found", "message": format!(
                "no order '{}' for this shopper; ask them to check the id in their confirmation", excerpt(id, 80)
            )}}),
        }
    }
}

fn tool_error(code: &str, message: impl Into<String>) -> ToolOutcome {
    ToolOutcome::Result(json!({"error": {"code": code, "message": message.into()}}))
}

/// Words to look for: lower-cased words of two letters or more, and for scripts written
/// without spaces (Chinese, Japanese, Thai) every pair of adjacent characters.
fn search_terms(query: &str) -> Vec<String> {
    let mut terms = Vec::new();
    for word in crate::words::lowercase_words(query) {
        let chars: Vec<char> = word.chars().collect();
        if chars.iter().any(|c| unspaced_script(*c)) && chars.len() > 2 {
            terms.extend(chars.windows(2).map(|w| w.iter().collect::<String>()));
        } else if chars.len() >= 2 || chars.iter().any(|c| unspaced_script(*c)) {
            terms.push(word);
        }
    }
    terms
}

fn unspaced_script(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x3400..=0x9FFF | 0x0E00..=0x0E7F)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> Shop {
        Shop::parse(
            r#"{"products": [
                {"id": "sneaker-38", "title": "Canvas sneaker", "titles": {"ar": "حذاء رياضي قماش", "zh": "帆布运动鞋"},
                 "description": "white canvas, sizes 36-44", "price_minor": 3999, "currency": "USD", "stock": 12},
                {"id": "bag-1", "title": "Leather tote bag", "price_minor": 8900, "currency": "USD", "stock": 0}
            ], "orders": [
                {"id": "A1001", "buyer": "layla", "status": "shipped", "items": [{"product_id": "bag-1", "title": "Leather tote bag", "quantity": 1}],
                 "total_minor": 8900, "currency": "USD", "carrier": "Aramex", "eta": "2026-12-01"}
            ]}"#,
        )
        .unwrap()
    }

    fn result(outcome: ToolOutcome) -> Value {
        match outcome {
            ToolOutcome::Result(v) => v,
            other => panic!("expected a result, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn search_finds_by_any_language_and_returns_the_locale_title() {
        let shop = shop();
        let found = result(
            shop.call(
                "search_catalog",
                r#"{"query": "canvas sneakers?", "locale": "ar"}"#,
                "x",
            )
            .await,
        );
        assert_eq!(found["results"][0]["id"], "sneaker-38");
        assert_eq!(found["results"][0]["title"], "حذاء رياضي قماش");
        let found = result(
            shop.call("search_catalog", r#"{"query": "有帆布鞋吗"}"#, "x")
                .await,
        );
        assert_eq!(found["results"][0]["id"], "sneaker-38");
        let none = result(
            shop.call("search_catalog", r#"{"query": "television"}"#, "x")
                .await,
        );
        assert_eq!(none["results"], json!([]));
    }

    #[tokio::test]
    async fn orders_only_for_their_buyer() {
        let shop = shop();
        let mine = get_order(&shop, "a1001", "layla").await;
        assert_eq!(mine["order"]["carrier"], "Aramex");
        let theirs = get_order(&shop, "A1001", "omar").await;
        let missing = get_order(&shop, "Z9", "omar").await;
        assert_eq!(theirs["error"]["code"], "order_not_found");
        assert_eq!(missing["error"]["code"], "order_not_found");
    }

    /// The ledger's orders as a test sees them: one order, or an unreachable store.
    struct Ledger(Option<Order>);

    impl SaleOrders for Ledger {
        fn find<'a>(&'a self, order_id: &'a str) -> OrderLookup<'a> {
            Box::pin(async move {
                match &self.0 {
                    Some(order) => Ok(Some(order.clone()).filter(|o| o.id == order_id)),
                    None => Err("database is closed".into()),
                }
            })
        }
    }

    /// `get_order` for `id`, asked by `shopper`.
    async fn get_order(shop: &Shop, id: &str, shopper: &str) -> Value {
        let arguments = json!({ "order_id": id }).to_string();
        result(shop.call("get_order", &arguments, shopper).await)
    }

    #[tokio::test]
    async fn live_sale_orders_are_looked_up_after_the_file() {
        let mut shop = shop();
        let mut sold = shop.orders[0].clone();
        (sold.id, sold.buyer, sold.status) = ("OR_9".into(), "ana".into(), "paid".into());
        shop.sale_orders = Some(Arc::new(Ledger(Some(sold))));
        assert_eq!(
            get_order(&shop, "OR_9", "ana").await["order"]["status"],
            "paid"
        );
        assert_eq!(
            get_order(&shop, "A1001", "layla").await["order"]["status"],
            "shipped"
        );
        let theirs = get_order(&shop, "OR_9", "omar").await;
        assert_eq!(theirs["error"]["code"], "order_not_found");
        shop.sale_orders = Some(Arc::new(Ledger(None)));
        let down = get_order(&shop, "OR_9", "ana").await;
        assert_eq!(down["error"]["code"], "orders_unavailable");
        assert_eq!(
            get_order(&shop, "A1001", "layla").await["order"]["status"],
            "shipped"
        );
    }

    #[tokio::test]
    async fn bad_arguments_get_an_error_the_model_can_read() {
        let shop = shop();
        for (name, args) in [
            ("search_catalog", "not json"),
            ("search_catalog", r#"["a"]"#),
            ("search_catalog", r#"{"query": 42}"#),
            ("search_catalog", r#"{"query": ""}"#),
            ("get_order", r#"{}"#),
        ] {
            let v = result(shop.call(name, args, "layla").await);
            assert_eq!(v["error"]["code"], "invalid_arguments", "{name} {args}");
        }
        let v = result(shop.call("delete_everything", "{}", "layla").await);
        assert_eq!(v["error"]["code"], "unknown_tool");
    }

    #[tokio::test]
    async fn transfer_carries_a_reason() {
        let shop = shop();
        assert_eq!(
            shop.call(
                "transfer_to_human",
                r#"{"reason": "wants a refund"}"#,
                "layla"
            )
            .await,
            ToolOutcome::Handoff {
                reason: "wants a refund".into()
            }
        );
        assert!(matches!(
            shop.call("transfer_to_human", "{}", "layla").await,
            ToolOutcome::Handoff { .. }
        ));
    }

    #[test]
    fn the_demo_shop_loads() {
        let demo = Shop::parse(DEMO_SHOP).unwrap();
        assert!(demo.products.len() >= 4 && demo.orders.len() >= 2);
    }

    #[tokio::test]
    async fn a_csv_catalogue_and_csv_orders_load_together() {
        let dir = std::env::temp_dir().join(format!("souk-shop-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (catalogue, orders) = (dir.join("catalogue.csv"), dir.join("orders.csv"));
        std::fs::write(
            &catalogue,
            "id,title,price_minor,currency\nhat,Straw hat,1500,EUR\n",
        )
        .unwrap();
        std::fs::write(
            &orders,
            "id,buyer,status,total_minor,currency,product_id,title,quantity\nB7,ana,shipped,1500,EUR,hat,Straw hat,1\n",
        )
        .unwrap();
        let shop = Shop::load(&catalogue, Some(&orders)).unwrap();
        let found = result(
            shop.call("search_catalog", r#"{"query": "hat"}"#, "ana")
                .await,
        );
        assert_eq!(found["results"][0]["price_minor"], 1500);
        let order = result(shop.call("get_order", r#"{"order_id": "B7"}"#, "ana").await);
        assert_eq!(order["order"]["status"], "shipped");
        let err = Shop::load(&catalogue, Some(&catalogue)).unwrap_err();
        assert!(
            err.contains("orders.csv") || err.contains("column"),
            "{err}"
        );
        let err = Shop::load(&dir.join("absent.csv"), None).unwrap_err();
        assert!(err.contains("absent.csv"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_shop_files_are_refused() {
        assert!(Shop::parse(r#"{"products": [{"id": "x"}]}"#).is_err());
        assert!(Shop::parse(r#"{"prodcuts": []}"#).is_err());
        assert!(Shop::parse(
            r#"{"products": [{"id": "x", "title": "t", "price_minor": -1, "currency": "USD"}]}"#
        )
        .is_err());
    }
}
