//! Where toybt keeps what should outlive a run but is no user's document: the DHT routing table, the resume records
//! of `seed`, `leech` and `share` (`resume/`). The XDG base directory rule: `$XDG_STATE_HOME/toybt`, else
//! `$HOME/.local/state/toybt`.

use std::ffi::OsString;
use std::path::PathBuf;

/// toybt's state folder from the environment; `None` when neither variable gives one (then nothing is kept).
pub fn state_dir() -> Option<PathBuf> {
    state_dir_from(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

/// The rule itself, given the two variables. The XDG specification says a relative path is invalid and must be
/// ignored, so it falls back to `$HOME` like an unset one.
pub fn state_dir_from(xdg_state_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(xdg) = absolute(xdg_state_home) {
        return Some(xdg.join("toybt"));
    }
    absolute(home).map(|h| h.join(".local").join("state").join("toybt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn xdg_state_home_comes_first_then_home() {
        assert_eq!(state_dir_from(os("/x/state"), os("/home/a")), Some(PathBuf::from("/x/state/toybt")));
        assert_eq!(state_dir_from(None, os("/home/a")), Some(PathBuf::from("/home/a/.local/state/toybt")));
    }

    #[test]
    fn empty_or_relative_values_are_ignored() {
        assert_eq!(state_dir_from(os(""), os("/home/a")), Some(PathBuf::from("/home/a/.local/state/toybt")));
        assert_eq!(state_dir_from(os("rel/state"), os("/home/a")), Some(PathBuf::from("/home/a/.local/state/toybt")));
        assert_eq!(state_dir_from(None, os("")), None);
        assert_eq!(state_dir_from(None, None), None);
    }
}
