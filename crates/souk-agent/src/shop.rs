//! The shop's data the agent may read, and the tools that read it.
//!
//! The model only ever sees what a tool returns, so the tools are where the agent's
//! answers are grounded: a product it names exists, a price it quotes is the catalogue's.
//! A call with bad arguments gets an error the model can read and correct; a shopper
//! asking for someone else's order learns nothing about it.

use std::collections::BTreeMap;
use std::path::Path;

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

/// The catalogue and orders, loaded once at start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shop {
    #[serde(default)]
    pub products: Vec<Product>,
    #[serde(default)]
    pub orders: Vec<Order>,
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
    /// Reads a JSON file `{"products": [...], "orders": [...]}`.
    pub fn load(path: &Path) -> Result<Shop, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading the shop data {}: {e}", path.display()))?;
        Shop::parse(&text).map_err(|e| format!("the shop data {} is invalid: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Shop, String> {
        let shop: Shop = serde_json::from_str(text).map_err(|e| e.to_string())?;
        for p in &shop.products {
            if p.price_minor < 0 {
                return Err(format!("product '{}' has a negative price", p.id));
            }
        }
        Ok(shop)
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
    pub fn call(&self, name: &str, arguments: &str, shopper: &str) -> ToolOutcome {
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
                Some(id) if !id.is_empty() => ToolOutcome::Result(self.order(id, shopper)),
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

    fn order(&self, id: &str, shopper: &str) -> Value {
        match self.orders.iter().find(|o| o.id.eq_ignore_ascii_case(id)) {
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

    #[test]
    fn search_finds_by_any_language_and_returns_the_locale_title() {
        let shop = shop();
        let found = result(shop.call(
            "search_catalog",
            r#"{"query": "canvas sneakers?", "locale": "ar"}"#,
            "x",
        ));
        assert_eq!(found["results"][0]["id"], "sneaker-38");
        assert_eq!(found["results"][0]["title"], "حذاء رياضي قماش");
        let found = result(shop.call("search_catalog", r#"{"query": "有帆布鞋吗"}"#, "x"));
        assert_eq!(found["results"][0]["id"], "sneaker-38");
        let none = result(shop.call("search_catalog", r#"{"query": "television"}"#, "x"));
        assert_eq!(none["results"], json!([]));
    }

    #[test]
    fn orders_only_for_their_buyer() {
        let shop = shop();
        let mine = result(shop.call("get_order", r#"{"order_id": "a1001"}"#, "layla"));
        assert_eq!(mine["order"]["carrier"], "Aramex");
        let theirs = result(shop.call("get_order", r#"{"order_id": "A1001"}"#, "omar"));
        let missing = result(shop.call("get_order", r#"{"order_id": "Z9"}"#, "omar"));
        assert_eq!(theirs["error"]["code"], "order_not_found");
        assert_eq!(missing["error"]["code"], "order_not_found");
    }

    #[test]
    fn bad_arguments_get_an_error_the_model_can_read() {
        let shop = shop();
        for (name, args) in [
            ("search_catalog", "not json"),
            ("search_catalog", r#"["a"]"#),
            ("search_catalog", r#"{"query": 42}"#),
            ("search_catalog", r#"{"query": ""}"#),
            ("get_order", r#"{}"#),
        ] {
            let v = result(shop.call(name, args, "layla"));
            assert_eq!(v["error"]["code"], "invalid_arguments", "{name} {args}");
        }
        let v = result(shop.call("delete_everything", "{}", "layla"));
        assert_eq!(v["error"]["code"], "unknown_tool");
    }

    #[test]
    fn transfer_carries_a_reason() {
        let shop = shop();
        assert_eq!(
            shop.call(
                "transfer_to_human",
                r#"{"reason": "wants a refund"}"#,
                "layla"
            ),
            ToolOutcome::Handoff {
                reason: "wants a refund".into()
            }
        );
        assert!(matches!(
            shop.call("transfer_to_human", "{}", "layla"),
            ToolOutcome::Handoff { .. }
        ));
    }

    #[test]
    fn the_demo_shop_loads() {
        let demo = Shop::parse(DEMO_SHOP).unwrap();
        assert!(demo.products.len() >= 4 && demo.orders.len() >= 2);
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
