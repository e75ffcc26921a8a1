//! Naming the program on the other end from its peer id, for log lines.

/// A readable client name from an Azureus-style peer id (`-TR3000-...` is Transmission 3.00).
pub fn client_name(peer_id: &[u8; 20]) -> String {
    if peer_id[0] == b'-' && peer_id[7] == b'-' && peer_id[1..7].iter().all(u8::is_ascii_alphanumeric) {
        let code = String::from_utf8_lossy(&peer_id[1..3]);
        let name = match &*code {
            "TB" => "toybt",
            "TR" => "Transmission",
            "LT" | "lt" => "libtorrent",
            "qB" => "qBittorrent",
            "DE" => "Deluge",
            "AR" => "aria2",
            "UT" => "uTorrent",
            "RT" => "rTorrent",
            _ => return String::from_utf8_lossy(&peer_id[..8]).into_owned(),
        };
        format!("{name} {}", String::from_utf8_lossy(&peer_id[3..7]))
    } else if peer_id.starts_with(b"A2-") {
        "aria2".into()
    } else {
        String::from_utf8_lossy(&peer_id[..8]).chars().filter(|c| !c.is_control()).collect()
    }
}
