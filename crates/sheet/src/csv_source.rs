//! CSV rows, read with the `csv` crate behind a guard that bounds record length before the
//! `csv` crate buffers anything, so a 50 MB field costs at most `max_cell_bytes` of memory.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use crate::SheetError;
use crate::cell::First;
use crate::format::{SNIFF_BYTES, UTF8_BOM};
use crate::rows::{RawRow, RowSource};

pub(crate) struct CsvSource {
    reader: csv::Reader<RecordGuard<BufReader<File>>>,
    record: csv::StringRecord,
    limit: usize,
}

impl CsvSource {
    pub(crate) fn open(path: &Path, max_cell_bytes: usize) -> Result<Self, SheetError> {
        let mut input = BufReader::with_capacity(SNIFF_BYTES, File::open(path)?);
        let head = input.fill_buf()?;
        let bom = head.starts_with(UTF8_BOM);
        let delimiter = detect_delimiter(if bom { &head[UTF8_BOM.len()..] } else { head });
        if bom {
            input.consume(UTF8_BOM.len());
        }
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(RecordGuard::new(input, delimiter, max_cell_bytes));
        Ok(CsvSource {
            reader,
            record: csv::StringRecord::new(),
            limit: max_cell_bytes,
        })
    }

    fn map_error(&self, e: csv::Error) -> SheetError {
        let message = e.to_string();
        match e.into_kind() {
            csv::ErrorKind::Io(io) => {
                match io.get_ref().and_then(|i| i.downcast_ref::<TooLong>()) {
                    Some(TooLong { row }) => SheetError::CellTooLarge {
                        row: *row,
                        limit: self.limit,
                    },
                    None => SheetError::Io(io),
                }
            }
            csv::ErrorKind::Utf8 { pos, .. } => SheetError::UnsupportedFormat(format!(
                "text that is not UTF-8 (row {}); save it as \"CSV UTF-8\"",
                pos.map_or(0, |p| p.line())
            )),
            _ => SheetError::Corrupt(message),
        }
    }
}

impl RowSource for CsvSource {
    fn next_raw(&mut self) -> Result<Option<RawRow>, SheetError> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => Ok(None),
            Ok(true) => {
                let first = match self.record.get(0).map(str::trim) {
                    None | Some("") => First::Empty,
                    Some(s) => First::Text(s.to_owned()),
                };
                let start = self.record.position().map_or(0, |p| p.byte());
                Ok(Some(RawRow {
                    number: self.reader.get_mut().next_record_line(start),
                    blank: self.record.iter().all(|f| f.trim().is_empty()),
                    first,
                }))
            }
            Err(e) => Err(self.map_error(e)),
        }
    }
}

/// Picks `,`, `;` or tab from the first non-blank lines: the most frequent outside quotes, a
/// comma on ties. Excel in many European locales writes `;`, and a wrong pick would glue the id
/// to the next column.
fn detect_delimiter(head: &[u8]) -> u8 {
    let mut counts = [0usize; 3];
    let candidates = [b',', b';', b'\t'];
    for line in head
        .split(|b| *b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .take(10)
    {
        let mut quoted = false;
        for b in line {
            if *b == b'"' {
                quoted = !quoted;
            } else if !quoted && let Some(i) = candidates.iter().position(|c| c == b) {
                counts[i] += 1;
            }
        }
    }
    let mut best = 0;
    for i in 1..candidates.len() {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    candidates[best]
}

/// A record longer than the limit, found by [`RecordGuard`].
#[derive(Debug)]
struct TooLong {
    row: u64,
}

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record at line {} is too long", self.row)
    }
}

impl std::error::Error for TooLong {}

#[derive(Clone, Copy)]
enum QuoteState {
    FieldStart,
    Unquoted,
    Quoted,
    /// A `"` inside a quoted field: either the closing quote or the first of `""`.
    QuoteInQuoted,
}

/// Passes bytes through while following CSV quoting the way the `csv` crate does (a quote opens
/// only at a field start, `""` is an escaped quote), failing the read as soon as one record,
/// quoted newlines included, passes the limit.
struct RecordGuard<R> {
    inner: R,
    delimiter: u8,
    limit: usize,
    state: QuoteState,
    record_len: usize,
    line: u64,
    record_line: u64,
    failed: Option<u64>,
    /// Bytes seen so far (the BOM excluded, as in the `csv` crate's positions).
    offset: u64,
    /// (byte offset, line) of the record starts seen but not yet returned by the `csv` crate,
    /// which skips empty lines and so cannot number rows itself. Bounded by its read-ahead.
    starts: VecDeque<(u64, u64)>,
}

impl<R> RecordGuard<R> {
    fn new(inner: R, delimiter: u8, limit: usize) -> Self {
        RecordGuard {
            inner,
            delimiter,
            limit,
            state: QuoteState::FieldStart,
            record_len: 0,
            line: 1,
            record_line: 1,
            failed: None,
            offset: 0,
            starts: VecDeque::new(),
        }
    }

    /// The line of the next record, which the `csv` crate says starts at or after byte `from`
    /// (its positions point just past the previous record's terminator, before skipped lines).
    fn next_record_line(&mut self, from: u64) -> u64 {
        while self
            .starts
            .front()
            .is_some_and(|&(offset, _)| offset < from)
        {
            // Only if our quoting rules and the csv crate's ever disagreed.
            self.starts.pop_front();
        }
        self.starts
            .pop_front()
            .map_or(self.record_line, |(_, line)| line)
    }

    fn step(&mut self, b: u8) -> Result<(), u64> {
        let (state, record_end) = match (self.state, b) {
            (QuoteState::Quoted, b'"') => (QuoteState::QuoteInQuoted, false),
            (QuoteState::Quoted, _) => (QuoteState::Quoted, false),
            (QuoteState::QuoteInQuoted, b'"') => (QuoteState::Quoted, false),
            (_, b'\n' | b'\r') => (QuoteState::FieldStart, true),
            (_, d) if d == self.delimiter => (QuoteState::FieldStart, false),
            (QuoteState::FieldStart, b'"') => (QuoteState::Quoted, false),
            _ => (QuoteState::Unquoted, false),
        };
        self.state = state;
        if record_end {
            self.record_len = 0;
        } else {
            if self.record_len == 0 {
                self.record_line = self.line;
                self.starts.push_back((self.offset, self.line));
            }
            self.record_len += 1;
            if self.record_len > self.limit {
                return Err(self.record_line);
            }
        }
        if b == b'\n' {
            self.line += 1;
        }
        self.offset += 1;
        Ok(())
    }
}

impl<R: Read> Read for RecordGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(row) = self.failed {
            return Err(io::Error::other(TooLong { row }));
        }
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            if let Err(row) = self.step(b) {
                self.failed = Some(row);
                return Err(io::Error::other(TooLong { row }));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiter_detection() {
        assert_eq!(detect_delimiter(b"user_id\n1\n"), b',');
        assert_eq!(detect_delimiter(b"\n\nid;name\n1;a\n"), b';');
        assert_eq!(detect_delimiter(b"id\tname\n"), b'\t');
        assert_eq!(detect_delimiter(b"id,\"a;b;c\"\n"), b',');
    }

    fn guard_run(input: &[u8], limit: usize) -> Result<(), u64> {
        let mut g = RecordGuard::new(input, b',', limit);
        input.iter().try_for_each(|b| g.step(*b))
    }

    #[test]
    fn guard_counts_records_not_lines() {
        assert_eq!(guard_run(b"12345\n12345\n", 5), Ok(()));
        assert_eq!(guard_run(b"1\n2\n123456\n", 5), Err(3));
        // Quoted newlines keep the record going.
        assert_eq!(guard_run(b"1\n\"ab\ncd\"\n", 5), Err(2));
        // A stray quote inside an unquoted field does not open a quoted section.
        assert_eq!(guard_run(b"1,5\" screen\n2\n3\n", 11), Ok(()));
    }
}
