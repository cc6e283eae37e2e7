//! The guest's HTTP/1.1 endpoint: request parsing and responses.
//!
//! `GET /` answers `NUBIS-HELLO <id>\n`; `GET /reset` answers, then the guest
//! resets; `GET /stream` answers a head and then one line per 100 ms until
//! the client closes; `GET /bulk?bytes=<n>` answers `<n>` bytes of a
//! pattern as fast as the stack sends them. Every response closes the
//! connection (`Connection: close`). Also the client side of the `http:`
//! probe check ([`hello_peer`]) and of the bulk fetch ([`response_head`]).

use alloc::format;
use alloc::vec::Vec;

/// Largest request head accepted.
pub const MAX_REQUEST: usize = 4096;

/// What the request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /`
    Hello,
    /// `GET /reset`
    Reset,
    /// `GET /user-data`: the user data read from the metadata service.
    UserData,
    /// `GET /stream`: a head, then [`stream_line`]s until the client closes.
    Stream,
    /// `GET /bulk?bytes=<n>`: a head with `Content-Length: <n>`, then `<n>`
    /// bytes of [`bulk_fill`]'s pattern.
    Bulk(u64),
    /// Any other path.
    NotFound,
    /// A method other than GET or HEAD.
    MethodNotAllowed,
}

/// Result of looking at the bytes received so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The request head is not complete yet.
    Incomplete,
    /// A complete request head. `head_only` for HEAD requests.
    Request { route: Route, head_only: bool },
    /// Not HTTP, or too large.
    Bad,
}

/// Parses the request head in `buf` (bytes received so far).
pub fn parse(buf: &[u8]) -> Parsed {
    let Some(end) = find(buf, b"\r\n\r\n").or_else(|| find(buf, b"\n\n")) else {
        return if buf.len() >= MAX_REQUEST {
            Parsed::Bad
        } else {
            Parsed::Incomplete
        };
    };
    let head = &buf[..end];
    let line_end = find(head, b"\n").unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let Ok(line) = core::str::from_utf8(line) else {
        return Parsed::Bad;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Bad;
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || method.is_empty() || !target.starts_with('/')
    {
        return Parsed::Bad;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let head_only = method == "HEAD";
    let route = match (method, path) {
        ("GET" | "HEAD", "/bulk") => {
            let bytes = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("bytes="))
                .and_then(crate::probe::parse_bulk_bytes);
            match bytes {
                Some(n) => Route::Bulk(n),
                None => return Parsed::Bad,
            }
        }
        ("GET" | "HEAD", "/") => Route::Hello,
        ("GET" | "HEAD", "/reset") => Route::Reset,
        ("GET" | "HEAD", "/user-data") => Route::UserData,
        ("GET" | "HEAD", "/stream") => Route::Stream,
        ("GET" | "HEAD", _) => Route::NotFound,
        _ => Route::MethodNotAllowed,
    };
    Parsed::Request { route, head_only }
}

fn raw_response(status: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The full response bytes for a parsed request (or `None` = bad request).
/// `user_data`: what the metadata service returned (`None`: nothing read,
/// `/user-data` is then 404).
pub fn respond(parsed: Option<(Route, bool)>, id: &str, user_data: Option<&[u8]>) -> Vec<u8> {
    let (status, body) = match parsed {
        Some((Route::Hello, _)) => ("200 OK", format!("NUBIS-HELLO {id}\n")),
        Some((Route::Reset, _)) => ("200 OK", format!("NUBIS-RESET {id}\n")),
        Some((Route::UserData, head_only)) => {
            return match user_data {
                Some(data) => raw_response("200 OK", data, head_only),
                None => raw_response("404 Not Found", b"no user data\n", head_only),
            }
        }
        Some((Route::Stream, _)) => {
            // No length: the body is the stream, ended by closing.
            return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                .to_vec();
        }
        Some((Route::Bulk(n), _)) => {
            // The body follows from [`bulk_fill`], sent by the caller.
            return format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
            )
            .into_bytes();
        }
        Some((Route::NotFound, _)) => ("404 Not Found", "not found\n".into()),
        Some((Route::MethodNotAllowed, _)) => {
            ("405 Method Not Allowed", "method not allowed\n".into())
        }
        None => ("400 Bad Request", "bad request\n".into()),
    };
    let head_only = matches!(parsed, Some((_, true)));
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        if matches!(parsed, Some((Route::MethodNotAllowed, _))) { "Allow: GET, HEAD\r\n" } else { "" },
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Interval between two lines of `GET /stream`, in milliseconds.
pub const STREAM_INTERVAL_MS: u64 = 100;
/// Longest `GET /stream`, in milliseconds (then the guest closes it).
pub const STREAM_MAX_MS: u64 = 10 * 60 * 1000;

/// Line `seq` (from 1) of `GET /stream`: `NUBIS-STREAM-DATA <id> seq=<n>\n`.
pub fn stream_line(id: &str, seq: u64) -> Vec<u8> {
    format!("NUBIS-STREAM-DATA {id} seq={seq}\n").into_bytes()
}

/// The body of `GET /bulk`: a repeating 64-byte line.
const BULK_PATTERN: &[u8; 64] =
    b"NUBIS-BULK-DATA 0123456789abcdefghijklmnopqrstuvwxyz0123456789.\n";

/// Fills `buf` with the bulk body's bytes from `offset` on.
pub fn bulk_fill(offset: u64, buf: &mut [u8]) {
    let mut at = (offset % BULK_PATTERN.len() as u64) as usize;
    for chunk in buf.chunks_mut(BULK_PATTERN.len()) {
        let len = chunk.len();
        let first = (BULK_PATTERN.len() - at).min(len);
        chunk[..first].copy_from_slice(&BULK_PATTERN[at..at + first]);
        chunk[first..].copy_from_slice(&BULK_PATTERN[..len - first]);
        at = (at + len) % BULK_PATTERN.len();
    }
}

/// The request of the `nubis-bulk` client.
pub fn bulk_request(host: &str, bytes: u64) -> Vec<u8> {
    format!("GET /bulk?bytes={bytes} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// A response head as the bulk client sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Not complete yet (and under [`MAX_REQUEST`] bytes).
    Incomplete,
    /// Complete: `len` bytes of head (blank line included), whether the
    /// status is 200, and the `Content-Length` if there is a valid one.
    Done {
        len: usize,
        ok: bool,
        content_length: Option<u64>,
    },
    /// Not an HTTP response head, or too long.
    Bad,
}

/// Looks at the first bytes of a response.
pub fn response_head(buf: &[u8]) -> Head {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() >= MAX_REQUEST || (buf.len() >= 5 && !buf.starts_with(b"HTTP/")) {
            Head::Bad
        } else {
            Head::Incomplete
        };
    };
    let Ok(head) = core::str::from_utf8(&buf[..end]) else {
        return Head::Bad;
    };
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if !status.starts_with("HTTP/1.") {
        return Head::Bad;
    }
    let ok = status.split(' ').nth(1) == Some("200");
    let content_length = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let value = value.trim();
        (name.eq_ignore_ascii_case("content-length")
            && !value.is_empty()
            && value.len() <= 19
            && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse().ok())
        .flatten()
    });
    Head::Done {
        len: end + 4,
        ok,
        content_length,
    }
}

/// The request of the `http:` probe check.
pub fn probe_request(host: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The request of the `nubis-stream` client.
pub fn stream_request(host: &str) -> Vec<u8> {
    format!("GET /stream HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// What a complete answer to [`probe_request`] says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloAnswer<'a> {
    /// Status 200 and a `NUBIS-HELLO <id>` body: the peer's id.
    Hello(&'a str),
    /// Anything else.
    Other,
}

/// Looks at a whole response (the server closed the connection): status
/// 200 and a body `NUBIS-HELLO <id>` (one line; the id 1-64 characters of
/// `A-Z a-z 0-9 . _ : -`).
pub fn hello_peer(response: &[u8]) -> HelloAnswer<'_> {
    let Some(end) = find(response, b"\r\n\r\n") else {
        return HelloAnswer::Other;
    };
    let status_ok =
        response.starts_with(b"HTTP/1.1 200 ") || response.starts_with(b"HTTP/1.0 200 ");
    let body = &response[end + 4..];
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    let id = match body.strip_prefix(b"NUBIS-HELLO ") {
        Some(id) if status_ok => id,
        _ => return HelloAnswer::Other,
    };
    match core::str::from_utf8(id) {
        Ok(id) if crate::cmdline::valid_id(id) => HelloAnswer::Hello(id),
        _ => HelloAnswer::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(route: Route) -> Parsed {
        Parsed::Request {
            route,
            head_only: false,
        }
    }

    #[test]
    fn routes() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            req(Route::Hello)
        );
        assert_eq!(parse(b"GET /?a=b HTTP/1.0\r\n\r\n"), req(Route::Hello));
        assert_eq!(parse(b"GET /reset HTTP/1.1\r\n\r\n"), req(Route::Reset));
        assert_eq!(parse(b"GET /x HTTP/1.1\n\n"), req(Route::NotFound));
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\n\r\n"),
            req(Route::MethodNotAllowed)
        );
        assert_eq!(
            parse(b"HEAD / HTTP/1.1\r\n\r\n"),
            Parsed::Request {
                route: Route::Hello,
                head_only: true
            }
        );
    }

    #[test]
    fn incomplete_and_bad() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Incomplete);
        assert_eq!(parse(b""), Parsed::Incomplete);
        assert_eq!(parse(&[b'a'; MAX_REQUEST]), Parsed::Bad);
        assert_eq!(parse(b"GET /\r\n\r\n"), Parsed::Bad);
        assert_eq!(parse(b"GET / SPDY/3\r\n\r\n"), Parsed::Bad);
        assert_eq!(parse(b"GET x HTTP/1.1\r\n\r\n"), Parsed::Bad);
        assert_eq!(parse(b"\xff\xfe / HTTP/1.1\r\n\r\n"), Parsed::Bad);
    }

    #[test]
    fn responses() {
        let r = respond(Some((Route::Hello, false)), "i-1", None);
        let s = core::str::from_utf8(&r).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(s.contains("Content-Length: 16\r\n"));
        assert!(s.ends_with("\r\n\r\nNUBIS-HELLO i-1\n"));
        let r = respond(Some((Route::Hello, true)), "i-1", None);
        assert!(r.ends_with(b"\r\n\r\n"));
        let r = respond(None, "i-1", None);
        assert!(r.starts_with(b"HTTP/1.1 400 "));
        let r = respond(Some((Route::MethodNotAllowed, false)), "i-1", None);
        assert!(core::str::from_utf8(&r)
            .unwrap()
            .contains("Allow: GET, HEAD\r\n"));
    }

    #[test]
    fn user_data_is_served_byte_for_byte() {
        let data: Vec<u8> = (0..=255u8).collect();
        assert_eq!(
            parse(b"GET /user-data HTTP/1.1\r\n\r\n"),
            req(Route::UserData)
        );
        let r = respond(Some((Route::UserData, false)), "i-1", Some(&data));
        assert!(r.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(r.ends_with(&data));
        let r = respond(Some((Route::UserData, false)), "i-1", None);
        assert!(r.starts_with(b"HTTP/1.1 404 "));
    }

    #[test]
    fn stream_route() {
        assert_eq!(parse(b"GET /stream HTTP/1.1\r\n\r\n"), req(Route::Stream));
        let head = respond(Some((Route::Stream, false)), "i-1", None);
        let s = core::str::from_utf8(&head).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(s.ends_with("Connection: close\r\n\r\n"));
        assert!(!s.contains("Content-Length"));
        assert_eq!(stream_line("i-1", 7), b"NUBIS-STREAM-DATA i-1 seq=7\n");
        assert!(parse(&stream_request("10.0.0.2")) == req(Route::Stream));
        assert!(parse(&probe_request("10.0.0.2")) == req(Route::Hello));
    }

    #[test]
    fn bulk_route_and_body() {
        assert_eq!(
            parse(b"GET /bulk?bytes=1048576 HTTP/1.1\r\n\r\n"),
            req(Route::Bulk(1 << 20))
        );
        assert_eq!(
            parse(b"GET /bulk?x=1&bytes=5 HTTP/1.1\r\n\r\n"),
            req(Route::Bulk(5))
        );
        assert_eq!(parse(&bulk_request("10.0.0.2", 77)), req(Route::Bulk(77)));
        for bad in [
            &b"GET /bulk HTTP/1.1\r\n\r\n"[..],
            b"GET /bulk?bytes=0 HTTP/1.1\r\n\r\n",
            b"GET /bulk?bytes=1073741825 HTTP/1.1\r\n\r\n",
            b"GET /bulk?bytes=12a HTTP/1.1\r\n\r\n",
            b"GET /bulk?bytes=-1 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse(bad), Parsed::Bad, "{bad:?}");
        }
        let head = respond(Some((Route::Bulk(300), false)), "i-1", None);
        assert_eq!(
            response_head(&head),
            Head::Done {
                len: head.len(),
                ok: true,
                content_length: Some(300)
            }
        );
        // The pattern continues across calls at any offset.
        let mut whole = [0u8; 300];
        bulk_fill(0, &mut whole);
        assert_eq!(&whole[..16], b"NUBIS-BULK-DATA ");
        assert_eq!(whole[63], b'\n');
        assert_eq!(whole[..64], whole[64..128]);
        let mut parts = [0u8; 300];
        let (a, b) = parts.split_at_mut(37);
        bulk_fill(0, a);
        bulk_fill(37, b);
        assert_eq!(parts, whole);
        let mut tail = [0u8; 10];
        bulk_fill(290, &mut tail);
        assert_eq!(tail, whole[290..]);
    }

    #[test]
    fn response_heads() {
        assert_eq!(response_head(b"HTTP/1.1 200 OK\r\n"), Head::Incomplete);
        assert_eq!(response_head(b"HTT"), Head::Incomplete);
        assert_eq!(response_head(b"SSH-2.0-x\r\n"), Head::Bad);
        assert_eq!(response_head(&[b'H'; MAX_REQUEST]), Head::Bad);
        assert_eq!(
            response_head(b"HTTP/1.1 404 Not Found\r\ncontent-length: 10\r\n\r\nnot found\n"),
            Head::Done {
                len: 46,
                ok: false,
                content_length: Some(10)
            }
        );
        assert_eq!(
            response_head(b"HTTP/1.0 200 OK\r\nContent-Length: x\r\n\r\n"),
            Head::Done {
                len: 38,
                ok: true,
                content_length: None
            }
        );
    }

    #[test]
    fn hello_answers() {
        // What this server answers is what the probe accepts.
        let r = respond(Some((Route::Hello, false)), "i-peer", None);
        assert_eq!(hello_peer(&r), HelloAnswer::Hello("i-peer"));
        assert_eq!(
            hello_peer(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nNUBIS-HELLO a.b"),
            HelloAnswer::Hello("a.b")
        );
        for other in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 404 Not Found\r\n\r\nNUBIS-HELLO i-1\n",
            b"HTTP/1.1 200 OK\r\n\r\n<html>NUBIS-HELLO i-1</html>",
            b"HTTP/1.1 200 OK\r\n\r\nNUBIS-HELLO \n",
            b"HTTP/1.1 200 OK\r\n\r\nNUBIS-HELLO i-1\nmore\n",
            b"HTTP/1.1 200 OK\r\n\r\nNUBIS-HELLO \xff\n",
        ] {
            assert_eq!(hello_peer(other), HelloAnswer::Other, "{other:?}");
        }
        let r = respond(Some((Route::Hello, true)), "i-peer", None);
        assert_eq!(hello_peer(&r), HelloAnswer::Other);
    }
}
