//! Report rendering shared by every scenario: aligned text columns, the one-line JSON summary
//! (the last line of stdout), and the cells several tables show the same way.

use serde::Serialize;
use std::fmt::Write as _;

/// The one-line JSON summary of a report.
pub fn json_line<T: Serialize>(report: &T) -> String {
    serde_json::to_string(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// How the last value column of [`columns`] is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Last {
    /// Right-aligned like the others (numbers).
    Aligned,
    /// As it is, unpadded (free text: shapes, paths).
    Free,
}

/// Rows of `(name, values)`, one line each: the names left-aligned, then the values two spaces
/// apart, each right-aligned to its column's widest. Widths count characters (`→`, `≤`).
pub fn columns<N: AsRef<str>>(rows: &[(N, Vec<String>)], last: Last) -> String {
    let width = |s: &str| s.chars().count();
    let name_w = rows.iter().map(|(n, _)| width(n.as_ref())).max();
    let name_w = name_w.unwrap_or(0);
    let cols = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let col_w: Vec<usize> = (0..cols)
        .map(|i| {
            let w = rows.iter().filter_map(|(_, v)| v.get(i)).map(|v| width(v));
            w.max().unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (name, values) in rows {
        let _ = write!(out, "{:<name_w$}", name.as_ref());
        for (i, (v, w)) in values.iter().zip(&col_w).enumerate() {
            if last == Last::Free && i + 1 == cols {
                let _ = write!(out, "  {v}");
            } else {
                let _ = write!(out, "  {v:>w$}");
            }
        }
        out.push('\n');
    }
    out
}

/// A one-shot report's rows of `(name, run, ceiling)`: the ceiling's column (free text) only
/// `with_ceiling`.
pub fn two_columns(rows: &[(&str, String, String)], with_ceiling: bool) -> String {
    let rows: Vec<(&str, Vec<String>)> = rows
        .iter()
        .map(|(name, run, ceiling)| {
            let values = if with_ceiling {
                vec![run.clone(), ceiling.clone()]
            } else {
                vec![run.clone()]
            };
            (*name, values)
        })
        .collect();
    let last = if with_ceiling {
        Last::Free
    } else {
        Last::Aligned
    };
    columns(&rows, last)
}

/// The cell of a value that is not there.
pub fn dash() -> String {
    "-".to_owned()
}

/// KiB as MiB to one decimal.
pub fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// Seconds to the millisecond.
pub fn secs3(s: Option<f64>) -> String {
    s.map_or_else(dash, |s| format!("{s:.3} s"))
}

/// CPU seconds to the hundredth.
pub fn cpu_secs(s: Option<f64>) -> String {
    s.map_or_else(dash, |s| format!("{s:.2} s"))
}

/// CPU use in cores (2.00 = two cores busy).
pub fn cores(c: Option<f64>) -> String {
    c.map_or_else(dash, |c| format!("{c:.2} cores"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_left_values_right() {
        let rows = vec![
            ("a", vec!["1".to_owned(), "22".to_owned()]),
            ("long name", vec!["333".to_owned(), "4".to_owned()]),
        ];
        assert_eq!(
            columns(&rows, Last::Aligned),
            "a            1  22\nlong name  333   4\n"
        );
        assert_eq!(
            columns(&rows, Last::Free),
            "a            1  22\nlong name  333  4\n"
        );
    }

    #[test]
    fn widths_count_characters() {
        let rows = [
            ("due → last", "1.000 s".into(), "x".into()),
            ("rows", "7".into(), "yy".into()),
        ];
        assert_eq!(
            two_columns(&rows, true),
            "due → last  1.000 s  x\nrows              7  yy\n"
        );
        assert_eq!(
            two_columns(&rows, false),
            "due → last  1.000 s\nrows              7\n"
        );
    }

    #[test]
    fn cells() {
        assert_eq!(mib(110_592), "108.0 MiB");
        assert_eq!(secs3(Some(20.2)), "20.200 s");
        assert_eq!(secs3(None), "-");
        assert_eq!(cpu_secs(Some(12.0)), "12.00 s");
        assert_eq!(cores(Some(1.5)), "1.50 cores");
        #[derive(Serialize)]
        struct R {
            a: u32,
        }
        assert_eq!(json_line(&R { a: 1 }), r#"{"a":1}"#);
    }
}
