//! The failure report of a distribution (`row,user_id,reason`), written as CSV or XLSX while
//! rows arrive page by page, so memory does not grow with the row count.

use std::borrow::Cow;
use std::error::Error;
use std::io;
use std::iter::Peekable;
use std::path::Path;

use rust_xlsxwriter::{Workbook, Worksheet};

use crate::Format;

/// One line of a failure report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRow {
    /// Row number in the uploaded file.
    pub row: u64,
    /// The raw first-column value, which may not be a number.
    pub user_id: String,
    pub reason: String,
}

/// Why a failure report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The row source (typically paged database reads) failed.
    #[error("reading the failure rows failed: {0}")]
    Rows(Box<dyn Error + Send + Sync>),
    #[error("writing the XLSX report failed: {0}")]
    Xlsx(#[from] rust_xlsxwriter::XlsxError),
    #[error("writing the CSV report failed: {0}")]
    Csv(#[from] csv::Error),
    #[error("writing the report failed: {0}")]
    Io(#[from] io::Error),
}

const HEADER: [&str; 3] = ["row", "user_id", "reason"];

/// Data rows per XLSX sheet: Excel's 1,048,576 rows minus the header.
pub const MAX_ROWS_PER_SHEET: u32 = 1_048_575;

/// Excel's longest cell text, in characters.
const MAX_XLSX_CHARS: usize = 32_767;

/// Writes the report to `out` and returns the number of data rows written. XLSX uses
/// rust_xlsxwriter's constant-memory mode, with `user_id` as text, continuing on a new sheet
/// after [`MAX_ROWS_PER_SHEET`] rows. CSV text cells that a spreadsheet would run as a formula
/// get a leading `'`.
pub fn write_failures<I, E>(out: &Path, format: Format, rows: I) -> Result<u64, WriteError>
where
    I: IntoIterator<Item = Result<FailureRow, E>>,
    E: Into<Box<dyn Error + Send + Sync>>,
{
    match format {
        Format::Csv => write_csv(out, rows.into_iter()),
        Format::Xlsx => write_xlsx(out, rows.into_iter().peekable(), MAX_ROWS_PER_SHEET),
    }
}

fn write_csv<E>(
    out: &Path,
    rows: impl Iterator<Item = Result<FailureRow, E>>,
) -> Result<u64, WriteError>
where
    E: Into<Box<dyn Error + Send + Sync>>,
{
    let mut writer = csv::Writer::from_path(out)?;
    writer.write_record(HEADER)?;
    let mut written = 0;
    for row in rows {
        let row = row.map_err(|e| WriteError::Rows(e.into()))?;
        writer.write_record([
            row.row.to_string().as_str(),
            &neutralise_formula(&row.user_id),
            &neutralise_formula(&row.reason),
        ])?;
        written += 1;
    }
    writer.flush()?;
    Ok(written)
}

pub(crate) fn write_xlsx<E, I>(
    out: &Path,
    mut rows: Peekable<I>,
    rows_per_sheet: u32,
) -> Result<u64, WriteError>
where
    I: Iterator<Item = Result<FailureRow, E>>,
    E: Into<Box<dyn Error + Send + Sync>>,
{
    let mut workbook = Workbook::new();
    let mut written = 0;
    let mut sheet_number = 1;
    loop {
        let sheet = workbook.add_worksheet_with_constant_memory()?;
        start_sheet(sheet, sheet_number)?;
        let mut r = 1;
        while r <= rows_per_sheet {
            let Some(row) = rows.next() else { break };
            let row = row.map_err(|e| WriteError::Rows(e.into()))?;
            // Row numbers stay below 2^53, exact in a spreadsheet number.
            sheet.write_number(r, 0, row.row as f64)?;
            sheet.write_string(r, 1, clip_chars(&row.user_id))?;
            sheet.write_string(r, 2, clip_chars(&row.reason))?;
            r += 1;
            written += 1;
        }
        if rows.peek().is_none() {
            break;
        }
        sheet_number += 1;
    }
    workbook.save(out)?;
    Ok(written)
}

fn start_sheet(sheet: &mut Worksheet, number: u32) -> Result<(), rust_xlsxwriter::XlsxError> {
    let name = if number == 1 {
        "Failures".to_owned()
    } else {
        format!("Failures ({number})")
    };
    sheet.set_name(name)?;
    // Column widths go before any row in constant-memory mode.
    sheet.set_column_width(0, 10)?;
    sheet.set_column_width(1, 24)?;
    sheet.set_column_width(2, 60)?;
    for (col, title) in (0u16..).zip(HEADER) {
        sheet.write_string(0, col, title)?;
    }
    Ok(())
}

/// CSV injection guard (OWASP): a cell starting with `=`, `+`, `-`, `@`, tab or CR is run as a
/// formula by spreadsheets; a leading `'` makes it plain text.
pub(crate) fn neutralise_formula(value: &str) -> Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

fn clip_chars(value: &str) -> &str {
    match value.char_indices().nth(MAX_XLSX_CHARS) {
        Some((cut, _)) => &value[..cut],
        None => value,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use calamine::{Data, Reader, Xlsx, open_workbook};

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(neutralise_formula("=1+1"), "'=1+1");
        assert_eq!(neutralise_formula("-5"), "'-5");
        assert_eq!(neutralise_formula("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(neutralise_formula("12"), "12");
        assert_eq!(neutralise_formula(""), "");
    }

    #[test]
    fn xlsx_continues_on_a_new_sheet() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("f.xlsx");
        let rows = (1..=5u64).map(|i| {
            Ok::<_, io::Error>(FailureRow {
                row: i,
                user_id: i.to_string(),
                reason: "x".into(),
            })
        });
        assert_eq!(write_xlsx(&out, rows.peekable(), 2).unwrap(), 5);
        let mut wb: Xlsx<_> = open_workbook(&out).unwrap();
        assert_eq!(
            wb.sheet_names(),
            ["Failures", "Failures (2)", "Failures (3)"]
        );
        let last = wb.worksheet_range("Failures (3)").unwrap();
        assert_eq!(last.get_value((1, 0)), Some(&Data::Float(5.0)));
        assert_eq!(last.height(), 2);
    }
}
