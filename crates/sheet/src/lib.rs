//! Reading and writing the spreadsheets of the distribution feature: the uploaded lists of
//! user ids (CSV or XLSX) and the failure reports given back to merchants.
//!
//! Uploads are hostile until proven otherwise, so reading happens in two passes:
//!
//! 1. [`inspect`] at upload: [`sniff`] the format from the bytes (never the file name); for
//!    XLSX, a zip safety scan that decompresses every entry into a small buffer, counting, and
//!    refuses zip bombs, oversized shared-string tables and giant cells before calamine loads
//!    anything; then one streaming pass over the rows. All bounds live in [`Limits`].
//! 2. [`RowReader`] when the distribution runs: streams the data rows of the accepted file in
//!    constant memory (calamine's cell reader for XLSX, the `csv` crate for CSV).
//!
//! [`write_failures`] writes the `row,user_id,reason` report, also in constant memory.
//!
//! # Rows
//!
//! Only the first column (column A, or the first CSV field) is read; other columns are
//! ignored. Blank rows (every cell empty or whitespace) are skipped everywhere and not counted.
//! Only the first non-blank row can be a header: it is one when its first cell is non-empty
//! text that does not start with an ASCII digit, `+` or `-` (`user_id`, `UserID`, `id`). Row
//! numbers are 1-based as a spreadsheet shows them (the header is row 1); for CSV they are the
//! line a record starts on.
//!
//! # User ids
//!
//! Text (CSV fields, XLSX text cells): trimmed ASCII digits only, no sign, at most 19 digits,
//! 1..=`i64::MAX` ([`parse_user_id`]). XLSX numbers: integral and within 1..=2^53 — above that a
//! spreadsheet number may already have rounded the id. Anything else (empty first cell on a
//! non-blank row, zero, negative, decimal, overflowing, booleans, errors, dates) is
//! [`Cell::Invalid`] with the raw value for the failure report.
//!
//! # CSV
//!
//! UTF-8 with an optional BOM. The delimiter is the most frequent of `,`, `;` and tab in the
//! first non-blank lines (a comma on ties), because Excel writes `;` in many locales.
//!
//! # Layout
//!
//! `format` (sniffing), `limits`, `error`, `cell` (id and header rules), `rows` (blank/header
//! logic shared by both formats), `csv_source`, `xlsx_source`, `zip_scan`, `inspect`, `reader`,
//! `failures`.

mod cell;
mod csv_source;
mod error;
mod failures;
mod format;
mod inspect;
mod limits;
mod reader;
mod rows;
mod xlsx_source;
mod zip_scan;

pub use cell::{Cell, MAX_RAW_CHARS, Row, number_to_user_id, parse_user_id};
pub use error::SheetError;
pub use failures::{FailureRow, MAX_ROWS_PER_SHEET, WriteError, write_failures};
pub use format::{Format, sniff};
pub use inspect::{Summary, inspect};
pub use limits::{Limits, RATIO_CHECK_FLOOR};
pub use reader::RowReader;
