//! The catalogue and orders as CSV, the form shop systems export them in.
//!
//! A catalogue has one product a row; an order export has one order *line* a row, the
//! order's own columns repeated on each of its lines. Headers name the columns, in any
//! order; an empty cell is an absent value. A column we do not know is refused rather
//! than ignored, so a misspelt `prcie_minor` is found at start, not by a shopper.

use std::collections::BTreeMap;

use crate::shop::{Order, OrderLine, Product};

/// Reads a catalogue: `id,title,price_minor,currency` are required; `description`,
/// `stock`, `url`, `image_url`, `tags` (separated by `;`) and `title_<lang>` columns
/// (`title_ar`, `title_pt-BR`) are optional.
pub fn products(text: &str) -> Result<Vec<Product>, String> {
    let table = Table::read(
        text,
        &["id", "title", "price_minor", "currency"],
        |column| {
            matches!(
                column,
                "description" | "stock" | "url" | "image_url" | "tags"
            ) || column.strip_prefix("title_").is_some_and(|l| !l.is_empty())
        },
    )?;
    table
        .rows()
        .map(|row| {
            let titles: BTreeMap<String, String> = row
                .cells()
                .filter_map(|(column, value)| {
                    Some((column.strip_prefix("title_")?.to_owned(), value.to_owned()))
                })
                .collect();
            Ok(Product {
                id: row.required("id")?.to_owned(),
                title: row.required("title")?.to_owned(),
                titles,
                description: row.get("description").unwrap_or_default().to_owned(),
                price_minor: row
                    .number("price_minor")?
                    .ok_or_else(|| row.missing("price_minor"))?,
                currency: row.required("currency")?.to_owned(),
                stock: row.number("stock")?,
                url: row.get("url").map(str::to_owned),
                image_url: row.get("image_url").map(str::to_owned),
                tags: row
                    .get("tags")
                    .map(|tags| {
                        tags.split(';')
                            .map(str::trim)
                            .filter(|t| !t.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Reads orders, one line a row: `id,buyer,status,total_minor,currency,product_id,title,quantity`
/// are required; `carrier`, `tracking` and `eta` are optional. The order's columns must
/// agree on every line of one order.
pub fn orders(text: &str) -> Result<Vec<Order>, String> {
    const ORDER_COLUMNS: [&str; 5] = ["id", "buyer", "status", "total_minor", "currency"];
    let required: Vec<&str> = ORDER_COLUMNS
        .iter()
        .chain(&["product_id", "title", "quantity"])
        .copied()
        .collect();
    let table = Table::read(text, &required, |column| {
        matches!(column, "carrier" | "tracking" | "eta")
    })?;
    let mut orders: Vec<Order> = Vec::new();
    for row in table.rows() {
        let line = OrderLine {
            product_id: row.required("product_id")?.to_owned(),
            title: row.required("title")?.to_owned(),
            quantity: row
                .number("quantity")?
                .ok_or_else(|| row.missing("quantity"))?,
        };
        let order = Order {
            id: row.required("id")?.to_owned(),
            buyer: row.required("buyer")?.to_owned(),
            status: row.required("status")?.to_owned(),
            items: vec![line],
            total_minor: row
                .number("total_minor")?
                .ok_or_else(|| row.missing("total_minor"))?,
            currency: row.required("currency")?.to_owned(),
            carrier: row.get("carrier").map(str::to_owned),
            tracking: row.get("tracking").map(str::to_owned),
            eta: row.get("eta").map(str::to_owned),
        };
        match orders.iter_mut().find(|o| o.id == order.id) {
            Some(earlier) => {
                let same = earlier.buyer == order.buyer
                    && earlier.status == order.status
                    && earlier.total_minor == order.total_minor
                    && earlier.currency == order.currency;
                if !same {
                    return Err(format!(
                        "line {}: order '{}' has different {} than on its earlier line",
                        row.line,
                        order.id,
                        ORDER_COLUMNS[1..].join("/")
                    ));
                }
                earlier.items.extend(order.items);
            }
            None => orders.push(order),
        }
    }
    Ok(orders)
}

/// A CSV file with its header checked.
struct Table {
    header: Vec<String>,
    records: Vec<(u64, csv::StringRecord)>,
}

impl Table {
    fn read(
        text: &str,
        required: &[&str],
        optional: impl Fn(&str) -> bool,
    ) -> Result<Table, String> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| e.to_string())?
            .iter()
            .map(str::to_owned)
            .collect();
        for column in &header {
            if !required.contains(&column.as_str()) && !optional(column) {
                return Err(format!(
                    "unknown column '{column}'; the columns are {}",
                    required.join(", ")
                ));
            }
        }
        if let Some(absent) = required.iter().find(|c| !header.iter().any(|h| h == *c)) {
            return Err(format!("the column '{absent}' is missing"));
        }
        let records = reader
            .records()
            .map(|record| {
                let record = record.map_err(|e| e.to_string())?;
                let line = record.position().map_or(0, |p| p.line());
                Ok((line, record))
            })
            .collect::<Result<_, String>>()?;
        Ok(Table { header, records })
    }

    fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.records.iter().map(|(line, record)| Row {
            header: &self.header,
            record,
            line: *line,
        })
    }
}

struct Row<'a> {
    header: &'a [String],
    record: &'a csv::StringRecord,
    line: u64,
}

impl Row<'_> {
    /// The non-empty cells with their column names.
    fn cells(&self) -> impl Iterator<Item = (&str, &str)> {
        self.header
            .iter()
            .map(String::as_str)
            .zip(self.record.iter())
            .filter(|(_, value)| !value.is_empty())
    }

    fn get(&self, column: &str) -> Option<&str> {
        self.cells().find(|(c, _)| *c == column).map(|(_, v)| v)
    }

    fn missing(&self, column: &str) -> String {
        format!("line {}: '{column}' is empty", self.line)
    }

    fn required(&self, column: &str) -> Result<&str, String> {
        self.get(column).ok_or_else(|| self.missing(column))
    }

    fn number<T: std::str::FromStr>(&self, column: &str) -> Result<Option<T>, String> {
        self.get(column)
            .map(|value| {
                value.parse().map_err(|_| {
                    format!(
                        "line {}: '{column}' must be a whole number, not '{value}'",
                        self.line
                    )
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalogue_with_titles_in_other_languages_and_tags() {
        let products = products(
            "id,title,title_ar,title_pt-BR,price_minor,currency,stock,tags,description\n\
             sneaker,Canvas sneaker,حذاء رياضي,Tênis de lona,3999,USD,12,shoes; sneakers,\"white, sizes 36-44\"\n\
             bag,Leather tote,,,8900,USD,,,\n",
        )
        .unwrap();
        assert_eq!(products.len(), 2);
        assert_eq!(products[0].titles["ar"], "حذاء رياضي");
        assert_eq!(products[0].titles["pt-BR"], "Tênis de lona");
        assert_eq!(products[0].tags, ["shoes", "sneakers"]);
        assert_eq!(products[0].description, "white, sizes 36-44");
        assert_eq!(products[0].stock, Some(12));
        assert!(products[1].titles.is_empty() && products[1].stock.is_none());
    }

    #[test]
    fn the_lines_of_one_order_become_its_items() {
        let orders = orders(
            "id,buyer,status,total_minor,currency,carrier,product_id,title,quantity\n\
             A1,layla,shipped,16800,USD,Aramex,abaya,Silk abaya,1\n\
             A2,joao,processing,3999,USD,,sneaker,Canvas sneaker,1\n\
             A1,layla,shipped,16800,USD,Aramex,sneaker,Canvas sneaker,1\n",
        )
        .unwrap();
        assert_eq!(orders.len(), 2);
        assert_eq!(orders[0].items.len(), 2);
        assert_eq!(orders[0].carrier.as_deref(), Some("Aramex"));
        assert_eq!(orders[1].carrier, None);
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        let head = "id,title,price_minor,currency\n";
        let err = products(&format!("{head}x,Hat,12.50,USD\n")).unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("price_minor"),
            "{err}"
        );
        let err = products(&format!("{head}x,,100,USD\n")).unwrap_err();
        assert!(err.contains("'title' is empty"), "{err}");
        let err = products("id,title,prcie_minor,currency\n").unwrap_err();
        assert!(err.contains("unknown column 'prcie_minor'"), "{err}");
        let err = products("id,title,currency\n").unwrap_err();
        assert!(err.contains("'price_minor' is missing"), "{err}");
        let err = orders(
            "id,buyer,status,total_minor,currency,product_id,title,quantity\n\
             A1,layla,shipped,100,USD,p,P,1\n\
             A1,omar,shipped,100,USD,q,Q,1\n",
        )
        .unwrap_err();
        assert!(err.contains("line 3") && err.contains("'A1'"), "{err}");
    }
}
