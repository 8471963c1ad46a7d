//! Reading results files written by earlier versions: each older layout is rewritten,
//! as JSON, into the current one before it is decoded.

use anyhow::bail;
use serde_json::Value;

use super::SCHEMA_VERSION;

/// Rewrites a results document of schema `version` into the current layout.
pub(super) fn to_current(mut doc: Value, version: u64) -> anyhow::Result<Value> {
    if version == 1 {
        v1_to_v2(&mut doc);
    } else if version != SCHEMA_VERSION as u64 {
        bail!("schema version {version}; this harness reads versions 1 to {SCHEMA_VERSION}");
    }
    Ok(doc)
}

/// Version 1 kept a verbatim copy of the load report per cell (`load_raw`, never read)
/// and wrote `idle: null` where a cell held no idle connections.
fn v1_to_v2(doc: &mut Value) {
    if let Some(cells) = doc.get_mut("cells").and_then(Value::as_array_mut) {
        for cell in cells {
            let Some(cell) = cell.as_object_mut() else {
                continue;
            };
            cell.remove("load_raw");
            if let Some(w) = cell.get_mut("workload").and_then(Value::as_object_mut) {
                if w.get("idle").is_none_or(Value::is_null) {
                    w.insert("idle".into(), Value::from(0));
                }
            }
        }
    }
    doc["schema_version"] = Value::from(SCHEMA_VERSION);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_cells_lose_load_raw_and_get_idle_zero() {
        let v1 = serde_json::json!({
            "schema_version": 1,
            "cells": [
                {"workload": {"kind": "echo", "idle": null}, "load_raw": {"x": 1}},
                {"workload": {"kind": "idle", "idle": 1000}, "load_raw": null}
            ]
        });
        let v2 = to_current(v1, 1).unwrap();
        assert_eq!(v2["schema_version"], 2);
        assert_eq!(v2["cells"][0]["workload"]["idle"], 0);
        assert_eq!(v2["cells"][1]["workload"]["idle"], 1000);
        assert!(v2["cells"][0].get("load_raw").is_none());
        assert!(to_current(serde_json::json!({}), 9).is_err());
    }
}
