//! The `toybt` command line: pick a subcommand, run it, turn its error into a message and an exit code.

use toybt::cli;
use toybt::error::Error;

const USAGE: &str = "\
toybt - a small BitTorrent client and tracker

Usage:
  toybt info FILE.torrent [--json | --magnet]
  toybt create PATH [-t URL]... [-l BYTES] [-o OUT.torrent] [--private] [-c COMMENT]
  toybt tracker FILE.torrent... [--bind ADDR] [--port N] [--udp-port M] [--no-udp] [--interval SECS] [--open]
  toybt seed FILE.torrent PATH [options]
  toybt leech FILE.torrent|MAGNET [-o DIR] [options]
  toybt share PATH [--tracker-port N] [--hosts N] [options]
  toybt dht [--bind ADDR] [--port N] [--bootstrap HOST:PORT]... [--state FILE]
  toybt daemon [--port N] [--rpc-port N] [--download-dir DIR] [--state-dir DIR] [--watch DIR] [options]

Run `toybt SUBCOMMAND --help` for the options of one subcommand.
Options:
  -h, --help     print this help
  -V, --version  print the version
";

fn main() {
    toybt::terminal::init_logger("info");
    let args = pico_args::Arguments::from_env();
    let code = match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("toybt: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}

fn run(mut args: pico_args::Arguments) -> Result<(), Error> {
    let sub = args.subcommand()?;
    match sub.as_deref() {
        Some("info") => cli::info::run(args),
        Some("create") => cli::create::run(args),
        Some("tracker") => cli::tracker::run(args),
        Some("seed") => cli::seed::run(args),
        Some("leech") => cli::leech::run(args),
        Some("share") => cli::share::run(args),
        Some("dht") => cli::dht::run(args),
        Some("daemon") => cli::daemon::run(args),
        Some("help") => {
            print!("{USAGE}");
            Ok(())
        }
        None if args.contains(["-V", "--version"]) => {
            println!("toybt {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        None if args.contains(["-h", "--help"]) => {
            print!("{USAGE}");
            Ok(())
        }
        None => {
            eprint!("{USAGE}");
            Err(Error::usage("no subcommand given"))
        }
        Some(other) => Err(Error::usage(format!("unknown subcommand `{other}` (try `toybt --help`)"))),
    }
}
