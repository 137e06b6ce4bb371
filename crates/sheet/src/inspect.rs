//! The upload-time validation pass.

use std::path::Path;

use crate::cell::Cell;
use crate::csv_source::CsvSource;
use crate::rows::{DataRows, RowSource};
use crate::xlsx_source::{XlsxSource, open_workbook};
use crate::{Format, Limits, SheetError, sniff, zip_scan};

/// What [`inspect`] learnt about an accepted file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub format: Format,
    /// Non-blank rows after the header.
    pub data_rows: u64,
    /// Whether the first non-blank row was taken as a header.
    pub header: bool,
    /// Data rows whose first column is a valid user id.
    pub valid_ids: u64,
}

/// The full validation done at upload: sniff the format; for XLSX run the zip safety scan
/// (bomb, shared-string table and giant-cell checks) before calamine opens the workbook; then
/// stream every row once, counting data rows and valid ids.
///
/// Blocking I/O: async callers run it under `spawn_blocking`.
pub fn inspect(path: &Path, limits: &Limits) -> Result<Summary, SheetError> {
    let format = sniff(path)?;
    match format {
        Format::Csv => summarise(
            CsvSource::open(path, limits.max_cell_bytes)?,
            format,
            limits,
        ),
        Format::Xlsx => {
            zip_scan::scan(path, limits)?;
            let (mut workbook, sheet) = open_workbook(path)?;
            let source = XlsxSource::new(&mut workbook, &sheet, limits.max_cell_bytes, None)?;
            summarise(source, format, limits)
        }
    }
}

fn summarise<S: RowSource>(
    source: S,
    format: Format,
    limits: &Limits,
) -> Result<Summary, SheetError> {
    let mut rows = DataRows::new(source);
    let (mut data_rows, mut valid_ids) = (0u64, 0u64);
    while let Some(row) = rows.next_row()? {
        data_rows += 1;
        if data_rows > limits.max_rows {
            return Err(SheetError::TooManyRows {
                limit: limits.max_rows,
            });
        }
        if matches!(row.value, Cell::UserId(_)) {
            valid_ids += 1;
        }
    }
    if data_rows == 0 {
        return Err(if rows.header() {
            SheetError::NoDataRows
        } else {
            SheetError::Empty
        });
    }
    if valid_ids == 0 {
        return Err(SheetError::NoUserIds);
    }
    Ok(Summary {
        format,
        data_rows,
        header: rows.header(),
        valid_ids,
    })
}
