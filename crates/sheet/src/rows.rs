//! Format-independent row logic: blank rows are skipped, the first non-blank row may be the
//! header, the rest are data rows numbered from 0.

use crate::SheetError;
use crate::cell::{First, Row};

/// One physical row as a format reader sees it.
pub(crate) struct RawRow {
    /// 1-based row number as a spreadsheet shows it.
    pub number: u64,
    pub first: First,
    /// Every cell is empty or whitespace.
    pub blank: bool,
}

/// A format reader: yields physical rows in file order.
pub(crate) trait RowSource {
    fn next_raw(&mut self) -> Result<Option<RawRow>, SheetError>;
}

/// Turns physical rows into data rows.
pub(crate) struct DataRows<S> {
    source: S,
    seen_non_blank: bool,
    header: bool,
    next_index: u64,
}

impl<S: RowSource> DataRows<S> {
    pub(crate) fn new(source: S) -> Self {
        DataRows {
            source,
            seen_non_blank: false,
            header: false,
            next_index: 0,
        }
    }

    /// Whether a header row has been seen (final once the first data row came out).
    pub(crate) fn header(&self) -> bool {
        self.header
    }

    pub(crate) fn next_row(&mut self) -> Result<Option<Row>, SheetError> {
        while let Some(raw) = self.source.next_raw()? {
            if raw.blank {
                continue;
            }
            if !self.seen_non_blank {
                self.seen_non_blank = true;
                if raw.first.is_header() {
                    self.header = true;
                    continue;
                }
            }
            let index = self.next_index;
            self.next_index += 1;
            return Ok(Some(Row {
                number: raw.number,
                index,
                value: raw.first.into_cell(),
            }));
        }
        Ok(None)
    }
}
