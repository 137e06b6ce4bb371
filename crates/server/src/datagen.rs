//! `stampede gen users`: distribution files for tests and benchmarks — one user id per row
//! under a `user_id` header, as CSV or XLSX. Both writers stream: memory does not grow with
//! the row count (the XLSX writer runs in rust_xlsxwriter's constant-memory mode, which
//! spills rows to a temp file instead of holding the sheet).

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;

/// Most rows one XLSX sheet holds (Excel's limit, minus the header).
pub const MAX_XLSX_ROWS: u64 = 1_048_575;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Xlsx,
}

fn progress(rows: u64) -> ProgressBar {
    let bar = ProgressBar::new(rows);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {pos}/{len} rows [{bar:40}] {per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}

/// Writes `rows` user ids `first, first + 1, …` to `out`.
pub fn users(rows: u64, first: u64, format: Format, out: &Path) -> anyhow::Result<()> {
    if rows == 0 {
        anyhow::bail!("--rows must be at least 1");
    }
    first
        .checked_add(rows)
        .filter(|last| *last <= i64::MAX as u64)
        .context("user ids would overflow a 64-bit id")?;
    let bar = progress(rows);
    match format {
        Format::Csv => {
            let mut w = csv::Writer::from_path(out)
                .with_context(|| format!("creating {}", out.display()))?;
            w.write_record(["user_id"])?;
            let mut buf = itoa_buf();
            for i in 0..rows {
                w.write_record([fmt_u64(&mut buf, first + i)])?;
                if i % 65_536 == 0 {
                    bar.set_position(i);
                }
            }
            w.flush()?;
        }
        Format::Xlsx => {
            if rows > MAX_XLSX_ROWS {
                anyhow::bail!(
                    "one XLSX sheet holds at most {MAX_XLSX_ROWS} rows; use --format csv for more"
                );
            }
            let mut wb = rust_xlsxwriter::Workbook::new();
            let ws = wb.add_worksheet_with_constant_memory()?;
            ws.write_string(0, 0, "user_id")?;
            for i in 0..rows {
                let row = u32::try_from(i + 1).context("row number")?;
                // Ids up to 2^53 are exact in a spreadsheet number.
                ws.write_number(row, 0, (first + i) as f64)?;
                if i % 65_536 == 0 {
                    bar.set_position(i);
                }
            }
            wb.save(out)
                .with_context(|| format!("writing {}", out.display()))?;
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn itoa_buf() -> String {
    String::with_capacity(20)
}

fn fmt_u64(buf: &mut String, v: u64) -> &str {
    use std::fmt::Write;
    buf.clear();
    let _ = write!(buf, "{v}");
    buf.as_str()
}
