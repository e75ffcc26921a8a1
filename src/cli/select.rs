//! `--select 1,3-5`: which files of a torrent to download, numbered from 1 in the order `toybt info` lists them
//! (the torrent's own order, padding files included, as aria2's `--select-file` counts). The list is checked for
//! form when the command line is read and against the torrent's file count once the torrent is known (for a magnet
//! link, once its metadata is in).

use crate::error::{Error, Result};

/// A parsed `--select` list: inclusive ranges of 1-based file numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    ranges: Vec<(u64, u64)>,
}

impl Selection {
    /// `N`, `N-M` (N ≤ M) and commas between them; spaces around items are allowed. Anything else is a usage error.
    pub fn parse(spec: &str) -> Result<Selection> {
        let bad = |why: &str| Error::usage(format!("--select {spec:?}: {why} (e.g. --select 1,3-5)"));
        let number = |s: &str| -> Result<u64> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("file numbers are whole numbers from 1"));
            }
            match s.parse::<u64>() {
                Ok(0) => Err(bad("files are numbered from 1")),
                Ok(n) => Ok(n),
                Err(_) => Err(bad("a file number is too large")),
            }
        };
        let mut ranges = Vec::new();
        for item in spec.split(',') {
            let range = match item.split_once('-') {
                Some((from, to)) => (number(from)?, number(to)?),
                None => {
                    let n = number(item)?;
                    (n, n)
                }
            };
            if range.0 > range.1 {
                return Err(bad("a range goes from the lower number to the higher"));
            }
            ranges.push(range);
        }
        Ok(Selection { ranges })
    }

    /// One entry per file of a torrent of `files` files: selected or not. A number past the last file is a usage
    /// error naming how many files there are.
    pub fn resolve(&self, files: usize) -> Result<Vec<bool>> {
        let mut wanted = vec![false; files];
        for &(from, to) in &self.ranges {
            if to > files as u64 {
                return Err(Error::usage(format!(
                    "--select: file {to} does not exist, the torrent has {files} file(s) (see `toybt info`)"
                )));
            }
            for n in from..=to {
                wanted[n as usize - 1] = true;
            }
        }
        Ok(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_ranges_select_files_counted_from_one() {
        let s = Selection::parse("1,3-5").unwrap();
        assert_eq!(s.resolve(6).unwrap(), [true, false, true, true, true, false]);
        assert_eq!(Selection::parse(" 2 , 2-2,1").unwrap().resolve(2).unwrap(), [true, true]);
    }

    #[test]
    fn malformed_or_out_of_range_lists_are_usage_errors() {
        for spec in ["", "0", "1,,2", "a", "3-1", "1-", "-2", "1-2-3", "+1", "1.5", "99999999999999999999999"] {
            let e = Selection::parse(spec).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{spec:?}");
        }
        let e = Selection::parse("1,4").unwrap().resolve(3).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("3 file(s)"), "{e}");
    }
}
