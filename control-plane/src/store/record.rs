//! Versioned records: what every JSON value in etcd is, how it is encoded
//! with its schema version and how it is decoded tolerantly.
//!
//! Encoding: the record's serde JSON object with `"schema":N` spliced in as
//! its first field (`{"schema":1,"id":…}`). Values that are not objects
//! (the node id of `node-hosts/…`) are written as they are.
//!
//! The upgrade rule (docs/etcd-schema.md):
//! - a record without `schema` was written by wave-1 main: schema 0;
//! - a new schema version only **adds** fields, each `#[serde(default)]`
//!   (a change of meaning is a new record kind under a new key); no record
//!   uses `deny_unknown_fields`, so an older reader ignores fields it does not
//!   know;
//! - a record whose schema is newer than the reader's is read tolerantly and,
//!   when rewritten by that older reader (through [`super::Tx::replace`]),
//!   keeps every field it did not know and its newer schema number, so an
//!   old replica during a rolling upgrade never drops a newer one's data;
//! - a value that does not decode, or is larger than [`MAX_VALUE_BYTES`], is
//!   an [`Error::Corrupt`] / [`Error::TooLarge`] naming its key: never taken
//!   for an absent record.

use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The largest value Nubis decodes (1 MiB; etcd's default request limit is
/// 1.5 MiB). The largest records written are a 64 KiB console tail and
/// 16 KiB of user data.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// A record kind stored in etcd.
pub trait Record: Serialize + DeserializeOwned {
    /// Short name of the kind (logs, errors, docs/etcd-schema.md).
    const KIND: &'static str;
    /// The schema version this code writes (0 = not versioned: the value is
    /// not a JSON object).
    const SCHEMA: u32;
}

/// Fields of a record written by a newer schema than this reader knows,
/// carried over when the record is rewritten.
#[derive(Debug, Clone)]
pub struct Newer {
    /// The record's schema version.
    pub schema: u32,
    /// The whole stored object.
    fields: Arc<Map<String, Value>>,
}

/// The schema version of an encoded record: the leading `"schema":N` field
/// written by [`encode`], 0 for a record of wave-1 main.
pub fn schema_of(value: &[u8]) -> u32 {
    let Some(rest) = value.strip_prefix(br#"{"schema":"#) else {
        return 0;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn corrupt(key: &[u8], source: serde_json::Error) -> Error {
    Error::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    }
}

/// Decodes a record, naming the key on failure. Also returns the stored
/// object when it was written by a newer schema (see [`Newer`]).
pub fn decode_record<R: Record>(key: &[u8], value: &[u8]) -> Result<(R, Option<Newer>)> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::TooLarge {
            key: String::from_utf8_lossy(key).into_owned(),
            bytes: value.len(),
        });
    }
    let rec: R = serde_json::from_slice(value).map_err(|e| corrupt(key, e))?;
    let schema = schema_of(value);
    if schema <= R::SCHEMA {
        return Ok((rec, None));
    }
    let fields: Map<String, Value> = serde_json::from_slice(value).map_err(|e| corrupt(key, e))?;
    tracing::debug!(
        key = %String::from_utf8_lossy(key),
        kind = R::KIND,
        schema,
        known = R::SCHEMA,
        "record written by a newer schema: its unknown fields are kept on rewrite"
    );
    Ok((
        rec,
        Some(Newer {
            schema,
            fields: Arc::new(fields),
        }),
    ))
}

/// Decodes a record (see [`decode_record`]), dropping what a newer schema added.
pub fn decode<R: Record>(key: &[u8], value: &[u8]) -> Result<R> {
    decode_record(key, value).map(|(r, _)| r)
}

/// Encodes a record with this code's schema version.
pub fn encode<R: Record>(rec: &R) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(rec)
        .map_err(|e| Error::Internal(format!("encoding a {} record: {e}", R::KIND)))?;
    if R::SCHEMA == 0 || body.first() != Some(&b'{') {
        return Ok(body);
    }
    let head = format!(r#"{{"schema":{}"#, R::SCHEMA);
    let mut out = Vec::with_capacity(body.len() + head.len() + 1);
    out.extend_from_slice(head.as_bytes());
    if body.len() > 2 {
        out.push(b',');
    }
    out.extend_from_slice(&body[1..]);
    Ok(out)
}

/// Encodes `rec` over a record written by a newer schema: the newer
/// record's fields this code does not know are kept, and so is its schema.
pub fn encode_over<R: Record>(rec: &R, newer: Option<&Newer>) -> Result<Vec<u8>> {
    let Some(newer) = newer else {
        return encode(rec);
    };
    let mut fields = match serde_json::to_value(rec) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return encode(rec),
        Err(e) => {
            return Err(Error::Internal(format!(
                "encoding a {} record: {e}",
                R::KIND
            )))
        }
    };
    for (k, v) in newer.fields.iter() {
        if !fields.contains_key(k) {
            fields.insert(k.clone(), v.clone());
        }
    }
    fields.remove("schema");
    let body = serde_json::to_vec(&Value::Object(fields))
        .map_err(|e| Error::Internal(format!("encoding a {} record: {e}", R::KIND)))?;
    let mut out = format!(r#"{{"schema":{}"#, newer.schema.max(R::SCHEMA)).into_bytes();
    if body.len() > 2 {
        out.push(b',');
    }
    out.extend_from_slice(&body[1..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Old {
        a: u32,
    }
    impl Record for Old {
        const KIND: &'static str = "test";
        const SCHEMA: u32 = 1;
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct New {
        a: u32,
        #[serde(default)]
        b: String,
    }
    impl Record for New {
        const KIND: &'static str = "test";
        const SCHEMA: u32 = 2;
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Empty {}
    impl Record for Empty {
        const KIND: &'static str = "empty";
        const SCHEMA: u32 = 3;
    }

    #[test]
    fn schema_leads_the_object() {
        let v = encode(&Old { a: 7 }).unwrap();
        assert_eq!(v, br#"{"schema":1,"a":7}"#);
        assert_eq!(schema_of(&v), 1);
        assert_eq!(schema_of(br#"{"a":7}"#), 0);
        assert_eq!(encode(&Empty {}).unwrap(), br#"{"schema":3}"#);
        assert_eq!(decode::<Empty>(b"k", br#"{"schema":3}"#).unwrap(), Empty {});
    }

    #[test]
    fn old_reader_keeps_newer_fields_on_rewrite() {
        let stored = encode(&New {
            a: 1,
            b: "kept".into(),
        })
        .unwrap();
        let (mut old, newer) = decode_record::<Old>(b"k", &stored).unwrap();
        assert_eq!(old, Old { a: 1 });
        let newer = newer.expect("schema 2 is newer than 1");
        old.a = 5;
        let rewritten = encode_over(&old, Some(&newer)).unwrap();
        assert_eq!(schema_of(&rewritten), 2);
        let back: New = decode(b"k", &rewritten).unwrap();
        assert_eq!(
            back,
            New {
                a: 5,
                b: "kept".into()
            }
        );
    }

    #[test]
    fn new_reader_defaults_missing_fields() {
        let stored = encode(&Old { a: 3 }).unwrap();
        let (n, newer) = decode_record::<New>(b"k", &stored).unwrap();
        assert!(newer.is_none());
        assert_eq!(
            n,
            New {
                a: 3,
                b: String::new()
            }
        );
    }

    #[test]
    fn corrupt_and_oversized_values_name_their_key() {
        let e = decode::<Old>(b"/nubis/v1/x", b"{not json").unwrap_err();
        assert!(matches!(&e, Error::Corrupt { key, .. } if key == "/nubis/v1/x"));
        let big = vec![b' '; MAX_VALUE_BYTES + 1];
        let e = decode::<Old>(b"/nubis/v1/y", &big).unwrap_err();
        assert!(matches!(&e, Error::TooLarge { key, .. } if key == "/nubis/v1/y"));
        assert!(e.to_string().contains("/nubis/v1/y"));
    }
}
