//! `inventory-csv`: one NHI to register per row, columns named like `POST /v1/nhis` fields
//! (the owner's three fields flattened to `owner_team`, `owner_application`, `owner_contact`).
//!
//! Values are kept as text: kinds, grants and times are checked by the server's registration
//! rules, so an import refuses exactly what the API refuses. Only the shape is checked here.

use crate::discovery::{InventoryOwner, InventoryRow, Record};

use super::table::{Table, pairs};

/// Every column the format knows, in the order the documentation lists them.
const COLUMNS: [&str; 12] = [
    "name",
    "kind",
    "platform",
    "environment",
    "owner_team",
    "owner_application",
    "owner_contact",
    "purpose",
    "scope_ceiling",
    "tags",
    "external_ids",
    "expires_at",
];

/// The columns a file must have, and a row must fill.
const REQUIRED: [&str; 5] = ["name", "kind", "platform", "owner_team", "purpose"];

pub(super) struct Inventory;

impl Table for Inventory {
    /// For each of [`COLUMNS`], where it is in the file, if it is there.
    type Layout = [Option<usize>; COLUMNS.len()];

    fn layout(header: &[&str]) -> Result<Self::Layout, String> {
        let mut layout = [None; COLUMNS.len()];
        for (at, name) in header.iter().enumerate() {
            let Some(column) = COLUMNS.iter().position(|known| known == name) else {
                return Err(format!(
                    "unknown column {name:?}: the columns are {}",
                    COLUMNS.join(", ")
                ));
            };
            if layout[column].replace(at).is_some() {
                return Err(format!("column {name:?} appears twice"));
            }
        }
        for name in REQUIRED {
            if layout[column(name)].is_none() {
                return Err(format!("missing required column {name:?}"));
            }
        }
        Ok(layout)
    }

    fn row(layout: &Self::Layout, fields: &[&str]) -> Result<Record, String> {
        let value = |name: &str| layout[column(name)].map_or("", |at| fields[at].trim());
        for name in REQUIRED {
            if value(name).is_empty() {
                return Err(format!("missing value for required column {name:?}"));
            }
        }
        let text = |name: &str| value(name).to_owned();
        Ok(Record::Inventory(Box::new(InventoryRow {
            name: text("name"),
            kind: text("kind"),
            platform: text("platform"),
            environment: text("environment"),
            owner: InventoryOwner {
                team: text("owner_team"),
                application: text("owner_application"),
                contact: text("owner_contact"),
            },
            purpose: text("purpose"),
            // Grants hold no spaces or semicolons, so either separates them.
            scope_ceiling: value("scope_ceiling")
                .split(|c: char| c == ';' || c.is_whitespace())
                .filter(|grant| !grant.is_empty())
                .map(str::to_owned)
                .collect(),
            tags: pairs("tags", value("tags"))?,
            external_ids: pairs("external_ids", value("external_ids"))?,
            expires_at: Some(text("expires_at")).filter(|at| !at.is_empty()),
        })))
    }
}

fn column(name: &str) -> usize {
    COLUMNS
        .iter()
        .position(|known| *known == name)
        .expect("every name asked for is one of COLUMNS")
}
