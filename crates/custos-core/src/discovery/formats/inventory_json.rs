//! `inventory-json`: an array of `POST /v1/nhis` bodies, or one per line.

use serde_json::{Map, Value};

use crate::discovery::{InventoryRow, Record};

/// Deserialises one element as an [`InventoryRow`], which refuses unknown fields: a misspelt
/// field would otherwise be dropped without a word and the NHI registered without it.
pub(super) fn record(object: Map<String, Value>) -> Result<Option<Record>, String> {
    serde_json::from_value::<InventoryRow>(Value::Object(object))
        .map(|row| Some(Record::Inventory(Box::new(row))))
        .map_err(|error| error.to_string())
}
