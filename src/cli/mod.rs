//! One module per subcommand. Each takes the remaining arguments, checks them (unknown flags are usage errors) and runs.

pub mod create;
pub mod daemon;
pub mod dht;
pub mod info;
pub mod leech;
pub mod seed;
pub mod select;
pub mod share;
pub mod swarm;
pub mod tracker;

use std::net::IpAddr;

use crate::error::{Error, Result};

/// Fail on any argument the subcommand did not consume, so typos are errors rather than ignored.
pub fn finish(args: pico_args::Arguments) -> Result<()> {
    let rest = args.finish();
    if rest.is_empty() {
        Ok(())
    } else {
        let words: Vec<String> = rest.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        Err(Error::usage(format!("unexpected argument(s): {}", words.join(" "))))
    }
}

/// Parses the value of a switch such as `--bind`, naming the value in the error.
pub fn ip_address(s: &str) -> std::result::Result<IpAddr, String> {
    s.parse().map_err(|_| format!("{s:?} is not an IP address"))
}
