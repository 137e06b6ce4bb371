//! XLSX rows, streamed cell by cell with calamine's `worksheet_cells_reader` from the first
//! worksheet. Only column A is kept; other cells only tell a blank row from a non-blank one.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use calamine::{DataRef, ExcelDateTime, Reader, SheetType, Xlsx, XlsxCellReader};

use crate::SheetError;
use crate::cell::First;
use crate::rows::{RawRow, RowSource};

pub(crate) type Workbook = Xlsx<BufReader<File>>;

/// Opens the workbook (this loads its shared string table: run the zip scan first) and names
/// its first worksheet.
pub(crate) fn open_workbook(path: &Path) -> Result<(Workbook, String), SheetError> {
    let workbook = Xlsx::new(BufReader::new(File::open(path)?)).map_err(corrupt)?;
    let sheet = workbook
        .sheets_metadata()
        .iter()
        .find(|s| matches!(s.typ, SheetType::WorkSheet))
        .map(|s| s.name.clone())
        .ok_or_else(|| SheetError::Corrupt("the workbook has no worksheet".to_owned()))?;
    Ok((workbook, sheet))
}

pub(crate) fn corrupt(e: calamine::XlsxError) -> SheetError {
    SheetError::Corrupt(format!("invalid XLSX content: {e}"))
}

pub(crate) struct XlsxSource<'a> {
    cells: XlsxCellReader<'a, BufReader<File>>,
    /// The first cell of the next row, read while looking for the end of the current one.
    pending: Option<calamine::Cell<DataRef<'a>>>,
    done: bool,
    limit: usize,
    /// Set when nobody wants more rows, so a background reader stops early.
    stop: Option<Arc<AtomicBool>>,
}

impl<'a> XlsxSource<'a> {
    pub(crate) fn new(
        workbook: &'a mut Workbook,
        sheet: &str,
        max_cell_bytes: usize,
        stop: Option<Arc<AtomicBool>>,
    ) -> Result<Self, SheetError> {
        Ok(XlsxSource {
            cells: workbook.worksheet_cells_reader(sheet).map_err(corrupt)?,
            pending: None,
            done: false,
            limit: max_cell_bytes,
            stop,
        })
    }

    fn next_cell(&mut self) -> Result<Option<calamine::Cell<DataRef<'a>>>, SheetError> {
        if let Some(cell) = self.pending.take() {
            return Ok(Some(cell));
        }
        if self.done {
            return Ok(None);
        }
        let cell = self.cells.next_cell().map_err(corrupt)?;
        self.done = cell.is_none();
        Ok(cell)
    }
}

impl RowSource for XlsxSource<'_> {
    fn next_raw(&mut self) -> Result<Option<RawRow>, SheetError> {
        if self
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            return Ok(None);
        }
        let Some(cell) = self.next_cell()? else {
            return Ok(None);
        };
        let row = cell.get_position().0;
        let mut raw = RawRow {
            number: u64::from(row) + 1,
            first: First::Empty,
            blank: true,
        };
        let mut seen_first = false;
        let mut next = Some(cell);
        while let Some(cell) = next.take() {
            let (cell_row, col) = cell.get_position();
            if cell_row != row {
                self.pending = Some(cell);
                break;
            }
            let value = cell.get_value();
            if text_len(value) > self.limit {
                return Err(SheetError::CellTooLarge {
                    row: raw.number,
                    limit: self.limit,
                });
            }
            let first = to_first(value);
            if first != First::Empty {
                raw.blank = false;
            }
            if col == 0 && !seen_first {
                seen_first = true;
                raw.first = first;
            }
            next = self.next_cell()?;
        }
        Ok(Some(raw))
    }
}

fn text_len(value: &DataRef<'_>) -> usize {
    match value {
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.len(),
        DataRef::SharedString(s) => s.len(),
        _ => 0,
    }
}

fn to_first(value: &DataRef<'_>) -> First {
    let text = |s: &str| {
        if s.trim().is_empty() {
            First::Empty
        } else {
            First::Text(s.to_owned())
        }
    };
    match value {
        DataRef::Empty => First::Empty,
        DataRef::String(s) => text(s),
        DataRef::SharedString(s) => text(s),
        DataRef::Float(n) => First::Number(*n),
        DataRef::Int(i) => First::Int(*i),
        DataRef::Bool(b) => First::Other(if *b { "TRUE" } else { "FALSE" }.to_owned()),
        DataRef::DateTime(dt) => First::Other(render_datetime(dt)),
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => First::Other(s.clone()),
        DataRef::Error(e) => First::Other(e.to_string()),
    }
}

/// Dates as the uploader typed them (`2024-05-01`), not as Excel's day serial.
fn render_datetime(dt: &ExcelDateTime) -> String {
    if dt.is_duration() {
        let seconds = (dt.as_f64() * 86_400.0).round() as i64;
        return format!(
            "{}:{:02}:{:02}",
            seconds / 3600,
            (seconds / 60 % 60).abs(),
            (seconds % 60).abs()
        );
    }
    let (y, mo, d, h, mi, s, _) = dt.to_ymd_hms_milli();
    if (h, mi, s) == (0, 0, 0) {
        format!("{y:04}-{mo:02}-{d:02}")
    } else {
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
    }
}
