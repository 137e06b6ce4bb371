//! The one error type of the crate. Every message is written for the person who uploaded the
//! file: it ends up in an HTTP 4xx `detail` or in a distribution task's failure reason.

use std::io;

/// Why a spreadsheet was refused or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SheetError {
    /// The content is neither CSV text nor an XLSX workbook; the text says what it looks like.
    #[error("not a CSV or XLSX file: looks like {0}")]
    UnsupportedFormat(String),
    /// No bytes at all, or no row with a value.
    #[error("the file is empty: it has no row with a value")]
    Empty,
    /// A header row and nothing under it.
    #[error("the file has a header row but no data rows")]
    NoDataRows,
    /// A cell (or a CSV line) longer than [`crate::Limits::max_cell_bytes`]. `row` is 0 when the
    /// cell was found in the workbook's shared string table, which has no row.
    #[error("{}", cell_too_large(*row, *limit))]
    CellTooLarge { row: u64, limit: usize },
    /// More data rows than [`crate::Limits::max_rows`].
    #[error("the file has more than {limit} data rows; split it into smaller files")]
    TooManyRows { limit: u64 },
    /// The XLSX archive decompresses to far more than a real workbook would.
    #[error("the XLSX file was refused as a possible zip bomb: {0}")]
    ZipBomb(String),
    /// The workbook's shared string table is bigger than [`crate::Limits::max_shared_strings_bytes`].
    #[error(
        "the workbook's text table is larger than {} once decompressed; remove the extra text \
         columns or save the file as CSV",
        human_bytes(*limit)
    )]
    SharedStringsTooLarge { limit: u64 },
    /// Not one data row has a valid user id in the first column.
    #[error(
        "no row has a valid user id in the first column (column A); put the user ids (whole \
         numbers from 1) in the first column"
    )]
    NoUserIds,
    /// The file claims a format but its content is damaged.
    #[error("the file could not be read: {0}")]
    Corrupt(String),
    /// Reading the file from our own disk failed: not the uploader's fault.
    #[error("reading the file failed: {0}")]
    Io(#[from] io::Error),
}

impl SheetError {
    /// True when the file itself is at fault (answer 4xx / fail the task for good); false for
    /// our own I/O failures, which are worth a retry.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, SheetError::Io(_))
    }
}

fn cell_too_large(row: u64, limit: usize) -> String {
    let limit = human_bytes(limit as u64);
    if row == 0 {
        format!("the file has a cell longer than {limit}")
    } else {
        format!("row {row} has a cell longer than {limit}")
    }
}

/// `65536` -> `64 KiB`: limits read better in binary units when they are exact.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_limit() {
        let e = SheetError::CellTooLarge {
            row: 7,
            limit: 64 * 1024,
        };
        assert_eq!(e.to_string(), "row 7 has a cell longer than 64 KiB");
        let e = SheetError::CellTooLarge { row: 0, limit: 100 };
        assert_eq!(e.to_string(), "the file has a cell longer than 100 bytes");
        assert!(!SheetError::Io(io::Error::other("disk")).is_client_error());
        assert!(SheetError::Empty.is_client_error());
    }
}
