//! XML encoding of EC2 responses.
//!
//! Owns the small escaped writer every action uses: a response envelope
//! `<XResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">` with its
//! `requestId`, nested elements, `<item>` lists (always emitted, empty as
//! `<name/>`: a missing set makes waiters poll forever), `true`/`false`
//! booleans and EC2 timestamps (`2026-11-27T07:00:34.000Z`).
//! Element names are `&'static str` written by this crate; only text is escaped.

use std::fmt::{Display, Write as _};

use time::OffsetDateTime;

/// The EC2 API namespace (with its trailing slash, as EC2 sends it).
pub const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// Appends `text` to `out` with `<`, `>` and `&` escaped (element text only).
/// Control characters XML 1.0 cannot carry (other than tab, CR, LF) become U+FFFD.
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// Formats a timestamp as EC2 does: UTC, millisecond precision, `Z` suffix.
pub fn timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// A writer for one EC2 response document.
#[derive(Debug)]
pub struct XmlWriter {
    buf: String,
    root: &'static str,
}

impl XmlWriter {
    /// Starts `<{action}Response xmlns=...><requestId>..</requestId>`.
    pub fn response(action: &'static str, request_id: &str) -> Self {
        let mut w = Self {
            buf: String::with_capacity(512),
            root: action,
        };
        w.buf
            .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
        w.buf.push_str(action);
        w.buf.push_str("Response xmlns=\"");
        w.buf.push_str(NAMESPACE);
        w.buf.push_str("\">");
        w.leaf("requestId", request_id);
        w
    }

    /// Writes `<name>text</name>` (text escaped).
    pub fn leaf(&mut self, name: &'static str, text: impl Display) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push('>');
        let start = self.buf.len();
        // Formatting into a String cannot fail.
        let _ = write!(self.buf, "{text}");
        if self.buf[start..].contains(['<', '>', '&']) || has_control(&self.buf[start..]) {
            let raw = self.buf.split_off(start);
            escape_into(&mut self.buf, &raw);
        }
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push('>');
        self
    }

    /// Writes `<name>text</name>` when `text` is present; nothing otherwise.
    pub fn leaf_opt<T: Display>(&mut self, name: &'static str, text: Option<T>) -> &mut Self {
        if let Some(t) = text {
            self.leaf(name, t);
        }
        self
    }

    /// Writes a boolean as `true`/`false`.
    pub fn bool(&mut self, name: &'static str, v: bool) -> &mut Self {
        self.leaf(name, if v { "true" } else { "false" })
    }

    /// Writes a timestamp in EC2's format.
    pub fn time(&mut self, name: &'static str, t: OffsetDateTime) -> &mut Self {
        self.leaf(name, timestamp(t))
    }

    /// Writes escaped text at the current position (for lists of strings).
    pub fn text(&mut self, text: &str) -> &mut Self {
        escape_into(&mut self.buf, text);
        self
    }

    /// Writes `<name/>`.
    pub fn empty(&mut self, name: &'static str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push_str("/>");
        self
    }

    /// Writes `<name>...</name>` with `body` writing the children.
    pub fn elem(&mut self, name: &'static str, body: impl FnOnce(&mut Self)) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push('>');
        body(self);
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push('>');
        self
    }

    /// Writes a list `<name><item>..</item>...</name>`, or `<name/>` when empty.
    pub fn list<I, T>(
        &mut self,
        name: &'static str,
        items: I,
        mut item: impl FnMut(&mut Self, T),
    ) -> &mut Self
    where
        I: IntoIterator<Item = T>,
    {
        let mut items = items.into_iter().peekable();
        if items.peek().is_none() {
            return self.empty(name);
        }
        self.elem(name, |w| {
            for it in items {
                w.elem("item", |w| item(w, it));
            }
        })
    }

    /// Closes the envelope and returns the document.
    pub fn finish(mut self) -> String {
        self.buf.push_str("</");
        self.buf.push_str(self.root);
        self.buf.push_str("Response>");
        self.buf
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(|c| {
        ((c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
            || c == '\u{FFFE}'
            || c == '\u{FFFF}'
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_lists_and_escaping() {
        let mut w = XmlWriter::response("DescribeInstances", "rid");
        w.list("reservationSet", ["r-1"], |w, r| {
            w.leaf("reservationId", r);
            w.list("instancesSet", Vec::<u8>::new(), |_, _| {});
            w.list("tagSet", [("k&", "<v>")], |w, (k, v)| {
                w.leaf("key", k).leaf("value", v);
            });
            w.bool("ebsOptimized", false);
            w.leaf_opt("keyName", None::<&str>);
            w.leaf("code", 16);
        });
        assert_eq!(
            w.finish(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
             <requestId>rid</requestId><reservationSet><item><reservationId>r-1</reservationId>\
             <instancesSet/><tagSet><item><key>k&amp;</key><value>&lt;v&gt;</value></item></tagSet>\
             <ebsOptimized>false</ebsOptimized><code>16</code></item></reservationSet>\
             </DescribeInstancesResponse>"
        );
    }

    #[test]
    fn control_characters_are_replaced() {
        let mut s = String::new();
        escape_into(&mut s, "a\u{1}b\nc'");
        assert_eq!(s, "a\u{FFFD}b\nc'");
        let mut w = XmlWriter::response("X", "r");
        w.leaf("m", "x\u{0}y");
        assert!(w.finish().contains("<m>x\u{FFFD}y</m>"));
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_795_762_834_123_456_789).unwrap();
        assert_eq!(timestamp(t), "2026-11-27T07:00:34.123Z");
    }
}
