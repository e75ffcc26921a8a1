//! The Prometheus text exposition format (version 0.0.4), written straight into a response body: every HTTP
//! service of the loop (the tracker now, the daemon later) describes its figures with [`Exposition`].
//!
//! A family is announced once with its help and type, then its samples follow; label values are escaped as the
//! format asks, so a torrent name cannot break a line.

use std::fmt::Write as _;

/// What `Content-Type` a scraper expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Writes metric families into `out`.
pub struct Exposition<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Exposition<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Exposition<'a> {
        Exposition { out }
    }

    /// Starts the family `name`; its samples follow with [`Exposition::sample`].
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let mut line = String::with_capacity(64);
        // HELP text escapes only backslash and newline.
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = write!(line, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        self.out.extend_from_slice(line.as_bytes());
        self
    }

    /// One sample of the family last started: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let mut line = String::with_capacity(64);
        line.push_str(name);
        if !labels.is_empty() {
            line.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                line.push_str(key);
                line.push_str("=\"");
                for c in val.chars() {
                    match c {
                        '\\' => line.push_str("\\\\"),
                        '"' => line.push_str("\\\""),
                        '\n' => line.push_str("\\n"),
                        c => line.push(c),
                    }
                }
                line.push('"');
            }
            line.push('}');
        }
        // Integral figures print without a fraction, as counters usually do.
        if value.fract() == 0.0 && value.abs() < 1e15 {
            let _ = writeln!(line, " {}", value as i64);
        } else {
            let _ = writeln!(line, " {value}");
        }
        self.out.extend_from_slice(line.as_bytes());
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaped_labels() {
        let mut out = Vec::new();
        Exposition::new(&mut out)
            .family("x_total", Kind::Counter, "Things\\done.\nTwo lines.")
            .sample("x_total", &[("proto", "udp")], 3.0)
            .sample("x_total", &[("name", "a\"b\\c\nd"), ("k", "v")], 0.5)
            .single("y", Kind::Gauge, "A gauge.", 7.0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# HELP x_total Things\\\\done.\\nTwo lines.\n# TYPE x_total counter\n\
             x_total{proto=\"udp\"} 3\n\
             x_total{name=\"a\\\"b\\\\c\\nd\",k=\"v\"} 0.5\n\
             # HELP y A gauge.\n# TYPE y gauge\ny 7\n"
        );
    }
}
