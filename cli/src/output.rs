//! Rendering of command results as aligned tables (default, for people) or
//! JSON (`--output json`, for scripts).
//!
//! The JSON shape is stable: a list command prints one object with one key
//! (e.g. `{"instances": [...]}`) whose value is an array of the same records a
//! table shows, with snake_case field names; a single-record command prints that
//! record as an object. Fields are never renamed; new fields may be added.

use std::io::Write;

use serde::Serialize;

use crate::error::CliError;

/// Output format of read commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns with a header line.
    #[default]
    Table,
    /// Pretty-printed, stable JSON.
    Json,
}

/// A record that can be shown as a table row.
pub trait Tabular: Serialize {
    /// Column headers.
    fn headers() -> &'static [&'static str];
    /// Cell values, in header order.
    fn row(&self) -> Vec<String>;
}

/// Renders rows under headers, columns separated by two spaces, the last
/// column not padded. Empty cells show as `-`.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell(c).chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let n = cells.len();
        let mut l = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                l.push_str(&c);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.iter().map(|c| cell(c)).collect());
    }
    out
}

/// Renders a list as a table or as `{"<key>": [...]}`.
pub fn render_list<T: Tabular>(format: Format, key: &str, items: &[T]) -> Result<String, CliError> {
    match format {
        Format::Table => {
            let rows: Vec<Vec<String>> = items.iter().map(Tabular::row).collect();
            Ok(render_table(T::headers(), &rows))
        }
        Format::Json => {
            let mut map = serde_json::Map::new();
            map.insert(key.to_string(), to_value(items)?);
            json_string(&serde_json::Value::Object(map))
        }
    }
}

/// Renders one record: a two-column key/value table, or a JSON object.
pub fn render_record<T: Serialize>(format: Format, record: &T) -> Result<String, CliError> {
    let value = to_value(record)?;
    match format {
        Format::Json => json_string(&value),
        Format::Table => {
            let mut rows = Vec::new();
            if let serde_json::Value::Object(map) = value {
                for (k, v) in map {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    rows.push(vec![k.to_uppercase(), v]);
                }
            }
            Ok(render_table(&["FIELD", "VALUE"], &rows))
        }
    }
}

fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<serde_json::Value, CliError> {
    serde_json::to_value(v).map_err(|e| CliError::Output(std::io::Error::other(e)))
}

fn json_string(v: &serde_json::Value) -> Result<String, CliError> {
    let mut s =
        serde_json::to_string_pretty(v).map_err(|e| CliError::Output(std::io::Error::other(e)))?;
    s.push('\n');
    Ok(s)
}

/// Writes rendered text to stdout. A closed pipe (`nubis ... | head`) is not
/// an error.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(CliError::Output),
    }
}

/// Formats a Unix time in milliseconds as RFC 3339 UTC (`-` for 0).
pub fn rfc3339_ms(ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row {
        id: String,
        state: String,
        n: u32,
    }

    impl Tabular for Row {
        fn headers() -> &'static [&'static str] {
            &["ID", "STATE", "N"]
        }
        fn row(&self) -> Vec<String> {
            vec![self.id.clone(), self.state.clone(), self.n.to_string()]
        }
    }

    fn rows() -> Vec<Row> {
        vec![
            Row {
                id: "i-0123".into(),
                state: "running".into(),
                n: 1,
            },
            Row {
                id: "i-9".into(),
                state: String::new(),
                n: 22,
            },
        ]
    }

    #[test]
    fn table_is_aligned_with_dash_for_empty() {
        let t = render_list(Format::Table, "rows", &rows()).unwrap();
        assert_eq!(
            t,
            "ID      STATE    N\n\
             i-0123  running  1\n\
             i-9     -        22\n"
        );
    }

    #[test]
    fn empty_table_has_only_headers() {
        let t = render_list::<Row>(Format::Table, "rows", &[]).unwrap();
        assert_eq!(t, "ID  STATE  N\n");
    }

    #[test]
    fn json_list_is_keyed_and_typed() {
        let j = render_list(Format::Json, "rows", &rows()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["rows"][0]["id"], "i-0123");
        assert_eq!(v["rows"][1]["n"], 22);
        assert_eq!(v["rows"][1]["state"], "");
        assert_eq!(v.as_object().unwrap().len(), 1);
        let empty = render_list::<Row>(Format::Json, "rows", &[]).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&empty).unwrap(),
            serde_json::json!({"rows": []})
        );
    }

    #[test]
    fn record_renders_as_fields_or_object() {
        let r = &rows()[0];
        let t = render_record(Format::Table, r).unwrap();
        assert!(t.starts_with("FIELD  VALUE\nID     i-0123\n"), "{t}");
        let j: serde_json::Value =
            serde_json::from_str(&render_record(Format::Json, r).unwrap()).unwrap();
        assert_eq!(j["state"], "running");
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(0), "");
        assert_eq!(rfc3339_ms(1_000), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339_ms(1_795_000_000_123), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
