//! `vsgx bench --quick`: the rows exist with their ids and units and every number is a finite
//! positive number. Wall-clock values and ratios depend on the machine and are never asserted.

use assert_cmd::Command;
use serde_json::Value;

/// The goals' ids and units, in output order.
const ROWS: [(&str, &str); 7] = [
    ("P1", "MiB/s"),
    ("P2", "µs/page"),
    ("P4", "s"),
    ("P6", "µs/page"),
    ("P7", "MiB/s"),
    ("P8", "µs/call"),
    ("P9", "µs/call"),
];

fn vsgx() -> Command {
    Command::cargo_bin("vsgx").unwrap()
}

fn positive(row: &Value, field: &str) -> f64 {
    let v = row[field].as_f64().unwrap_or_else(|| panic!("{}: {field} is a JSON number: {row}", row["id"]));
    assert!(v.is_finite() && v > 0.0, "{}: {field} = {v} is finite and positive", row["id"]);
    v
}

#[test]
fn quick_json_has_every_goal() {
    let out = vsgx().args(["bench", "--quick", "--json"]).assert().success().get_output().stdout.clone();
    let rows: Value = serde_json::from_slice(&out).expect("stdout is JSON");
    let rows = rows.as_array().expect("a JSON array of rows");
    assert_eq!(rows.len(), ROWS.len(), "{rows:?}");
    for (row, (id, unit)) in rows.iter().zip(ROWS) {
        assert_eq!(row["id"], id, "{row}");
        assert_eq!(row["unit"], unit, "{row}");
        for field in ["what", "yardstick", "goal"] {
            assert!(row[field].as_str().is_some_and(|s| !s.is_empty()), "{id}: {field} is text: {row}");
        }
        for field in ["value", "yardstick_value", "ratio"] {
            positive(row, field);
        }
    }
    let p4 = &rows[2];
    positive(p4, "epcm_bytes_per_page");
    assert!(rows.iter().filter(|r| r.get("epcm_bytes_per_page").is_some()).count() == 1, "only P4 has it");
}

#[test]
fn quick_prints_a_table() {
    let out = vsgx().args(["bench", "--quick"]).assert().success().get_output().stdout.clone();
    let text = String::from_utf8(out).expect("UTF-8");
    let mut lines = text.lines();
    let header = lines.next().expect("a header line");
    for column in ["ID", "WHAT", "VALUE", "UNIT", "YARDSTICK", "RATIO"] {
        assert!(header.contains(column), "{column} in {header:?}");
    }
    for (id, unit) in ROWS {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("a row for {id} in:\n{text}"));
        assert!(line.contains(&format!(" {unit} ")), "{id}'s row shows {unit}: {line:?}");
    }
    assert!(serde_json::from_str::<Value>(&text).is_err(), "human output is not JSON");
}
