//! The live status line on a terminal, and log lines that never land on it (aria2c's model).
//!
//! On a terminal, `seed`, `leech` and the start-up check redraw one line in place (`\r` + line + erase to the end of
//! the line). A log line written while it is drawn would be glued onto it, so the logger installed by [`init_logger`]
//! writes every record as: erase the status line, the record (which ends with its newline), the status line again.
//! The status line lives behind a mutex, so the logger may be called from any thread.
//!
//! The CLI calls [`show`] only when stderr is a terminal; the functions are harmless elsewhere (they draw on stderr all
//! the same, so do not call them there). Without a status line drawn, a log record is written unchanged.

use std::io::{self, IsTerminal, Write};
use std::sync::{Mutex, MutexGuard};

/// Back to the first column and erase to the end of the line.
const ERASE: &[u8] = b"\r\x1b[K";

/// The status line on screen now, if any.
static STATUS: Mutex<Option<String>> = Mutex::new(None);

fn status() -> MutexGuard<'static, Option<String>> {
    // A panic while drawing leaves at worst a stale line: keep going.
    STATUS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Draws `line` as the live status line on stderr (replacing the one drawn before) and remembers it, so log lines
/// are written around it.
pub fn show(line: &str) {
    let mut status = status();
    let _ = draw(&mut io::stderr().lock(), &mut status, line);
}

/// Erases the status line, if one is drawn, and forgets it.
pub fn clear() {
    let mut status = status();
    let _ = erase(&mut io::stderr().lock(), &mut status);
}

/// Leaves the status line on screen as an ordinary line (ends it with a newline) and forgets it: what comes next is
/// written below it, and log lines no longer redraw it.
pub fn finish() {
    let mut status = status();
    let _ = end(&mut io::stderr().lock(), &mut status);
}

/// Installs the process's logger: env_logger (filter from `RUST_LOG`, else `default_filter`; millisecond timestamps)
/// which, when stderr is a terminal, writes each record around the status line. Elsewhere env_logger writes to
/// stderr as it always did.
pub fn init_logger(default_filter: &str) {
    let tty = io::stderr().is_terminal();
    let mut env = env_logger::Env::default().default_filter_or(default_filter);
    if tty {
        // A pipe target loses env_logger's own colour detection: decide here as it would on a terminal
        // (`RUST_LOG_STYLE` still overrides).
        let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
        env = env.default_write_style_or(if colour { "always" } else { "never" });
    }
    let mut builder = env_logger::Builder::from_env(env);
    builder.format_timestamp_millis();
    if tty {
        builder.target(env_logger::Target::Pipe(Box::new(AroundStatus)));
    }
    builder.init();
}

/// env_logger's output on a terminal: it writes each formatted record with one `write_all` (and then `flush`), which
/// this turns into one write of erase + record + status line.
struct AroundStatus;

impl Write for AroundStatus {
    fn write(&mut self, record: &[u8]) -> io::Result<usize> {
        let status = status();
        write_log(&mut io::stderr().lock(), &status, record)?;
        Ok(record.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

fn draw(out: &mut impl Write, status: &mut Option<String>, line: &str) -> io::Result<()> {
    let drawn = status.get_or_insert_with(String::new);
    drawn.clear();
    drawn.push_str(line);
    let mut bytes = Vec::with_capacity(line.len() + 4);
    bytes.push(b'\r');
    bytes.extend_from_slice(line.as_bytes());
    bytes.extend_from_slice(b"\x1b[K");
    out.write_all(&bytes)?;
    out.flush()
}

fn erase(out: &mut impl Write, status: &mut Option<String>) -> io::Result<()> {
    if status.take().is_some() {
        out.write_all(ERASE)?;
        out.flush()?;
    }
    Ok(())
}

fn end(out: &mut impl Write, status: &mut Option<String>) -> io::Result<()> {
    if status.take().is_some() {
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}

/// Writes one log record: unchanged when no status line is drawn; else erase it, the record (a newline added if it
/// has none), and draw the status line again, all in one write so the terminal never shows the record glued on.
fn write_log(out: &mut impl Write, status: &Option<String>, record: &[u8]) -> io::Result<()> {
    let Some(line) = status else {
        out.write_all(record)?;
        return out.flush();
    };
    let mut bytes = Vec::with_capacity(ERASE.len() + record.len() + 1 + line.len() + 4);
    bytes.extend_from_slice(ERASE);
    bytes.extend_from_slice(record);
    if !record.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    bytes.push(b'\r');
    bytes.extend_from_slice(line.as_bytes());
    bytes.extend_from_slice(b"\x1b[K");
    out.write_all(&bytes)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_is_written_around_the_status_line() {
        let mut out = Vec::new();
        let mut status = None;
        draw(&mut out, &mut status, "[SEED 286MiB CN:0]").unwrap();
        write_log(&mut out, &status, b"[12:00 INFO  toybt] tracker: ok\n").unwrap();
        draw(&mut out, &mut status, "[SEED 286MiB CN:1]").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\r[SEED 286MiB CN:0]\x1b[K\
             \r\x1b[K[12:00 INFO  toybt] tracker: ok\n\r[SEED 286MiB CN:0]\x1b[K\
             \r[SEED 286MiB CN:1]\x1b[K"
        );
    }

    #[test]
    fn a_record_without_a_newline_gets_one_before_the_redraw() {
        let mut out = Vec::new();
        write_log(&mut out, &Some("[50%]".into()), b"no newline").unwrap();
        assert_eq!(out, b"\r\x1b[Kno newline\n\r[50%]\x1b[K");
    }

    #[test]
    fn without_a_status_line_a_log_line_is_unchanged() {
        let mut out = Vec::new();
        write_log(&mut out, &None, b"[12:00 INFO  toybt] hello\n").unwrap();
        assert_eq!(out, b"[12:00 INFO  toybt] hello\n");
    }

    #[test]
    fn clear_erases_and_forgets_finish_keeps_the_line_and_forgets() {
        let mut out = Vec::new();
        let mut status = None;
        erase(&mut out, &mut status).unwrap();
        end(&mut out, &mut status).unwrap();
        assert!(out.is_empty(), "nothing drawn, nothing to erase or end");
        draw(&mut out, &mut status, "a").unwrap();
        erase(&mut out, &mut status).unwrap();
        assert_eq!(status, None);
        write_log(&mut out, &status, b"log\n").unwrap();
        draw(&mut out, &mut status, "b").unwrap();
        end(&mut out, &mut status).unwrap();
        write_log(&mut out, &status, b"after\n").unwrap();
        assert_eq!(out, b"\ra\x1b[K\r\x1b[Klog\n\rb\x1b[K\nafter\n");
    }
}
