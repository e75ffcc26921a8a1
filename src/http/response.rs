//! HTTP/1.1 response writing: a head with any status, content type and extra headers put in front of a body that
//! was written where the response goes, so a body needs no buffer of its own.

use super::Status;
use crate::bencode::decimal;

/// Everything a response head says besides the body's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    pub status: Status,
    pub content_type: &'a str,
    /// Whole header lines, each ending in CRLF (empty for none).
    pub extra_headers: &'a str,
    /// Without it, the head says `Connection: close`.
    pub keep_alive: bool,
}

/// Appends a complete response with `body` to `out`.
pub fn write_response(out: &mut Vec<u8>, head: &Head<'_>, body: &[u8]) {
    let start = out.len();
    out.extend_from_slice(body);
    frame_response(out, start, head);
}

/// Makes the body already at `out[body_start..]` a complete response by putting the head in front of it, with no
/// copy but the move of the body by the head's length.
pub fn frame_response(out: &mut Vec<u8>, body_start: usize, head: &Head<'_>) {
    let (mut code_buf, mut len_buf) = ([0; 20], [0; 20]);
    let code = decimal(u64::from(head.status.code()), &mut code_buf);
    let len = decimal((out.len() - body_start) as u64, &mut len_buf);
    let mut head_len = 0;
    head_pieces(head, code, len, |p| head_len += p.len());
    let end = out.len();
    out.resize(end + head_len, 0);
    out.copy_within(body_start..end, body_start + head_len);
    let mut at = body_start;
    head_pieces(head, code, len, |p| {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    });
}

/// The head, piece by piece: measured first, then written into the gap made for it.
fn head_pieces(head: &Head<'_>, code: &[u8], len: &[u8], mut piece: impl FnMut(&[u8])) {
    for p in [b"HTTP/1.1 ", code, b" ", head.status.reason().as_bytes(), b"\r\nContent-Type: "] {
        piece(p);
    }
    for p in [head.content_type.as_bytes(), b"\r\nContent-Length: ", len, b"\r\n", head.extra_headers.as_bytes()] {
        piece(p);
    }
    if !head.keep_alive {
        piece(b"Connection: close\r\n");
    }
    piece(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(status: Status, extra_headers: &str, keep_alive: bool) -> Head<'_> {
        Head { status, content_type: "text/plain", extra_headers, keep_alive }
    }

    #[test]
    fn response_has_length_and_close_header_when_closing() {
        let mut out = Vec::new();
        write_response(&mut out, &text(Status::Ok, "", true), b"d1:ai1ee");
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\nd1:ai1ee");
        out.clear();
        write_response(&mut out, &text(Status::MethodNotAllowed, "Allow: GET\r\n", false), b"x");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.ends_with("Allow: GET\r\nConnection: close\r\n\r\nx"), "{text}");
    }

    #[test]
    fn a_body_built_in_place_is_framed_behind_earlier_responses() {
        let mut out = Vec::new();
        write_response(&mut out, &text(Status::Ok, "", true), b"first");
        let first = out.clone();
        let start = out.len();
        out.extend_from_slice(b"second body");
        frame_response(&mut out, start, &text(Status::HeaderFieldsTooLarge, "", false));
        assert_eq!(&out[..start], &first[..]);
        let text = String::from_utf8(out[start..].to_vec()).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\
             Connection: close\r\n\r\nsecond body"
        );
    }

    #[test]
    fn any_status_content_type_and_headers() {
        let mut out = Vec::new();
        let head = Head {
            status: Status::Other(418, "I'm a teapot"),
            content_type: "application/json",
            extra_headers: "Cache-Control: no-store\r\n",
            keep_alive: true,
        };
        write_response(&mut out, &head, b"{}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 418 I'm a teapot\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             Cache-Control: no-store\r\n\r\n{}"
        );
    }
}
