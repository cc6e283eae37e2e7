//! The guest's HTTP/1.1 endpoint: request parsing and responses.
//!
//! `GET /` answers `NUBIS-HELLO <id>\n`; `GET /reset` answers, then the guest
//! resets. Every response closes the connection (`Connection: close`).

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
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let head_only = method == "HEAD";
    let route = match (method, path) {
        ("GET" | "HEAD", "/") => Route::Hello,
        ("GET" | "HEAD", "/reset") => Route::Reset,
        ("GET" | "HEAD", "/user-data") => Route::UserData,
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
}
