//! Who may use the RPC, checked before a request is read: Transmission's defences, so tools written for it behave
//! the same here.
//!
//! - Credentials (HTTP Basic) when the daemon has `--rpc-auth`; required to listen beyond loopback.
//! - The `Host` header must be an IP address, `localhost`, or a name the daemon was told of: a web page on another
//!   site that resolves its own name to 127.0.0.1 (DNS rebinding) is refused with 421.
//! - A session id in `X-Transmission-Session-Id`, which a browser page on another site cannot read (CSRF): without
//!   it the answer is 409 carrying the id, and a client repeats the request with it.

use std::net::IpAddr;

use base64::Engine as _;

use crate::http::Request;

pub const SESSION_HEADER: &str = "X-Transmission-Session-Id";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// `user:password`, when credentials are required.
    pub credentials: Option<String>,
    /// Host names allowed besides IP addresses and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// The id a client must send back; random per process.
    pub session_id: String,
}

/// Why a request is refused, each with the status Transmission answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// 401, with `WWW-Authenticate`.
    Unauthorized,
    /// 421: the Host header names a site we do not serve.
    MisdirectedHost,
    /// 409, with the session id header.
    NoSessionId,
}

impl Access {
    /// Checks credentials and host for any request, and the session id when `needs_session` (the RPC itself; the
    /// page's static files do not need one).
    pub fn check(&self, req: &Request<'_>, needs_session: bool) -> Result<(), Denied> {
        if let Some(expected) = &self.credentials
            && !basic_credentials_match(req.header("authorization"), expected)
        {
            return Err(Denied::Unauthorized);
        }
        if !self.host_allowed(req.host) {
            return Err(Denied::MisdirectedHost);
        }
        if needs_session && req.header(SESSION_HEADER) != Some(self.session_id.as_bytes()) {
            return Err(Denied::NoSessionId);
        }
        Ok(())
    }

    fn host_allowed(&self, host: Option<&[u8]>) -> bool {
        // HTTP/1.0 clients may send no Host; then there is nothing a rebinding page could have forged.
        let Some(host) = host else { return true };
        let Ok(host) = std::str::from_utf8(host) else { return false };
        let name = strip_port(host.trim());
        if name.eq_ignore_ascii_case("localhost") || name.eq_ignore_ascii_case("localhost.") {
            return true;
        }
        let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
        bare.parse::<IpAddr>().is_ok() || self.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` without the port.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        // One colon: a port. More: a bare IPv6 address, which has no port.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn basic_credentials_match(header: Option<&[u8]>, expected: &str) -> bool {
    let Some(value) = header.and_then(|h| std::str::from_utf8(h).ok()) else { return false };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else { return false };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    // Compared in time independent of where they differ, so the answer time does not leak the password.
    decoded.len() == expected.len() && decoded.iter().zip(expected.as_bytes()).fold(0, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_request;

    fn access(credentials: Option<&str>) -> Access {
        Access {
            credentials: credentials.map(str::to_string),
            allowed_hosts: vec!["nas.home".into()],
            session_id: "s3ss10n".into(),
        }
    }

    fn check(a: &Access, head: &str, needs_session: bool) -> Result<(), Denied> {
        let raw = format!("POST /transmission/rpc HTTP/1.1\r\n{head}\r\n");
        let req = parse_request(raw.as_bytes(), 0).unwrap().unwrap();
        a.check(&req, needs_session)
    }

    #[test]
    fn the_session_id_is_needed_for_the_rpc_only() {
        let a = access(None);
        assert_eq!(check(&a, "Host: 127.0.0.1:9091\r\n", true), Err(Denied::NoSessionId));
        assert_eq!(
            check(&a, "Host: 127.0.0.1:9091\r\nX-Transmission-Session-Id: wrong\r\n", true),
            Err(Denied::NoSessionId)
        );
        assert_eq!(check(&a, "Host: 127.0.0.1:9091\r\nx-transmission-session-id: s3ss10n\r\n", true), Ok(()));
        assert_eq!(check(&a, "Host: 127.0.0.1:9091\r\n", false), Ok(()));
    }

    #[test]
    fn hosts_must_be_addresses_localhost_or_allowed_names() {
        let a = access(None);
        for ok in [
            "127.0.0.1",
            "127.0.0.1:9091",
            "[::1]:9091",
            "[::1]",
            "::1",
            "localhost:9091",
            "LOCALHOST.",
            "nas.home:9091",
            "10.1.2.3",
        ] {
            assert_eq!(check(&a, &format!("Host: {ok}\r\n"), false), Ok(()), "{ok}");
        }
        for bad in ["evil.example", "evil.example:9091", "127.0.0.1.evil.example", "localhost.evil", "[::1"] {
            assert_eq!(check(&a, &format!("Host: {bad}\r\n"), false), Err(Denied::MisdirectedHost), "{bad}");
        }
        assert_eq!(check(&a, "", false), Ok(()), "no Host header (HTTP/1.0)");
    }

    #[test]
    fn credentials_are_checked_first_when_required() {
        let a = access(Some("me:secret"));
        let good = base64::engine::general_purpose::STANDARD.encode("me:secret");
        let wrong = base64::engine::general_purpose::STANDARD.encode("me:secreT");
        assert_eq!(check(&a, "Host: evil.example\r\n", true), Err(Denied::Unauthorized));
        assert_eq!(
            check(&a, &format!("Host: 127.0.0.1\r\nAuthorization: Basic {wrong}\r\n"), false),
            Err(Denied::Unauthorized)
        );
        assert_eq!(check(&a, "Host: 127.0.0.1\r\nAuthorization: Basic !!!\r\n", false), Err(Denied::Unauthorized));
        assert_eq!(
            check(&a, &format!("Host: 127.0.0.1\r\nAuthorization: Bearer {good}\r\n"), false),
            Err(Denied::Unauthorized)
        );
        assert_eq!(check(&a, &format!("Host: 127.0.0.1\r\nAuthorization: basic {good}\r\n"), false), Ok(()));
        assert_eq!(
            check(&a, &format!("Host: evil.example\r\nAuthorization: Basic {good}\r\n"), false),
            Err(Denied::MisdirectedHost)
        );
    }
}
