//! Streaming the data rows of an accepted file, in constant memory.
//!
//! calamine's cell reader borrows the workbook it reads from, and a struct cannot own both
//! without `unsafe`; so XLSX rows are read on a helper thread that owns the workbook and hands
//! rows over in small batches through a bounded channel. Dropping the [`RowReader`] stops it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::{io, mem, thread, vec};

use crate::cell::Row;
use crate::csv_source::CsvSource;
use crate::rows::DataRows;
use crate::xlsx_source::{Workbook, XlsxSource, open_workbook};
use crate::{Format, Limits, SheetError};

/// Rows per message from the XLSX thread; two messages in flight at most.
const BATCH: usize = 512;
const IN_FLIGHT: usize = 2;

/// Iterates over the data rows of a file already accepted by [`crate::inspect`]: header and
/// blank rows are skipped, only the first column is read. After an error it yields nothing more.
pub struct RowReader {
    inner: Inner,
    peeked: Option<Row>,
}

enum Inner {
    Csv(Box<DataRows<CsvSource>>),
    Xlsx(XlsxRows),
    Done,
}

impl RowReader {
    /// Opens the file. For XLSX this loads the shared string table (bounded by the upload scan)
    /// and starts the reading thread.
    pub fn open(path: &Path, format: Format, limits: &Limits) -> Result<Self, SheetError> {
        let inner = match format {
            Format::Csv => Inner::Csv(Box::new(DataRows::new(CsvSource::open(
                path,
                limits.max_cell_bytes,
            )?))),
            Format::Xlsx => Inner::Xlsx(XlsxRows::spawn(path, limits.max_cell_bytes)?),
        };
        Ok(RowReader {
            inner,
            peeked: None,
        })
    }

    /// Moves on so that the next row returned is the data row with index `index` (or the end),
    /// e.g. to resume a distribution. Reads and discards the rows before it.
    pub fn skip_to(&mut self, index: u64) -> Result<(), SheetError> {
        loop {
            match self.next() {
                Some(Ok(row)) if row.index < index => {}
                Some(Ok(row)) => {
                    self.peeked = Some(row);
                    return Ok(());
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    }

    fn advance(&mut self) -> Option<Result<Row, SheetError>> {
        match &mut self.inner {
            Inner::Csv(rows) => rows.next_row().transpose(),
            Inner::Xlsx(rows) => rows.next(),
            Inner::Done => None,
        }
    }
}

impl Iterator for RowReader {
    type Item = Result<Row, SheetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(row) = self.peeked.take() {
            return Some(Ok(row));
        }
        let item = self.advance();
        if !matches!(item, Some(Ok(_))) {
            self.inner = Inner::Done;
        }
        item
    }
}

enum Message {
    Rows(Vec<Row>),
    Failed(SheetError),
    Finished,
}

struct XlsxRows {
    receiver: Receiver<Message>,
    batch: vec::IntoIter<Row>,
    stop: Arc<AtomicBool>,
}

impl XlsxRows {
    fn spawn(path: &Path, max_cell_bytes: usize) -> Result<Self, SheetError> {
        // Opened here so that an unreadable workbook fails `open`, not the first `next`.
        let (workbook, sheet) = open_workbook(path)?;
        let (sender, receiver) = sync_channel(IN_FLIGHT);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        thread::Builder::new()
            .name("sheet-xlsx-rows".to_owned())
            .spawn(move || pump(workbook, &sheet, max_cell_bytes, thread_stop, &sender))?;
        Ok(XlsxRows {
            receiver,
            batch: Vec::new().into_iter(),
            stop,
        })
    }

    fn next(&mut self) -> Option<Result<Row, SheetError>> {
        loop {
            if let Some(row) = self.batch.next() {
                return Some(Ok(row));
            }
            match self.receiver.recv() {
                Ok(Message::Rows(rows)) => self.batch = rows.into_iter(),
                Ok(Message::Failed(e)) => return Some(Err(e)),
                Ok(Message::Finished) => return None,
                // The thread ended without a word: it panicked. A bug of ours, not the file's.
                Err(_) => {
                    return Some(Err(SheetError::Io(io::Error::other(
                        "the XLSX reading thread stopped unexpectedly",
                    ))));
                }
            }
        }
    }
}

impl Drop for XlsxRows {
    fn drop(&mut self) {
        // The thread also stops when its next send fails; the flag covers long blank stretches.
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pump(
    mut workbook: Workbook,
    sheet: &str,
    max_cell_bytes: usize,
    stop: Arc<AtomicBool>,
    sender: &SyncSender<Message>,
) {
    let result = (|| {
        let source = XlsxSource::new(&mut workbook, sheet, max_cell_bytes, Some(stop))?;
        let mut rows = DataRows::new(source);
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(row) = rows.next_row()? {
            batch.push(row);
            if batch.len() == BATCH
                && sender
                    .send(Message::Rows(mem::replace(
                        &mut batch,
                        Vec::with_capacity(BATCH),
                    )))
                    .is_err()
            {
                return Ok(false);
            }
        }
        Ok(batch.is_empty() || sender.send(Message::Rows(batch)).is_ok())
    })();
    // A failed send means the reader is gone; nobody is left to tell.
    let _ = match result {
        Ok(true) => sender.send(Message::Finished),
        Ok(false) => Ok(()),
        Err(e) => sender.send(Message::Failed(e)),
    };
}
