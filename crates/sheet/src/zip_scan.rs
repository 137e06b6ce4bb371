//! The XLSX safety scan, run before calamine opens a workbook: every entry is decompressed
//! into a small buffer and counted, so a zip bomb, an oversized shared string table or a giant
//! cell is refused after reading at most the limit, whatever sizes the archive declares.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::Path;

use crate::error::human_bytes;
use crate::limits::RATIO_CHECK_FLOOR;
use crate::{Limits, SheetError};

/// A workbook has a few dozen entries; tens of thousands only serve to slow the scan down.
const MAX_ENTRIES: usize = 10_000;

pub(crate) fn scan(path: &Path, limits: &Limits) -> Result<(), SheetError> {
    let file = File::open(path)?;
    let compressed = file.metadata()?.len().max(1);
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| SheetError::Corrupt(format!("invalid zip archive: {e}")))?;
    if zip.len() > MAX_ENTRIES {
        return Err(SheetError::ZipBomb(format!(
            "it holds {} entries, more than the {MAX_ENTRIES} a workbook could need",
            zip.len()
        )));
    }
    let ratio_budget = compressed.saturating_mul(limits.max_compression_ratio);
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 << 10];
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| SheetError::Corrupt(format!("unreadable zip entry: {e}")))?;
        if entry.is_dir() {
            continue;
        }
        let kind = entry
            .name()
            .map(|n| Part::of(&n.to_ascii_lowercase()))
            .unwrap_or(Part::Other);
        let mut xml = match kind {
            Part::Other => None,
            Part::SharedStrings | Part::OtherXml => {
                Some(XmlScan::new(limits.max_cell_bytes, false))
            }
            Part::Worksheet => Some(XmlScan::new(limits.max_cell_bytes, true)),
        };
        let mut entry_total: u64 = 0;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(SheetError::Corrupt(format!("damaged zip entry: {e}"))),
            };
            total += n as u64;
            entry_total += n as u64;
            if kind == Part::SharedStrings && entry_total > limits.max_shared_strings_bytes {
                return Err(SheetError::SharedStringsTooLarge {
                    limit: limits.max_shared_strings_bytes,
                });
            }
            if total > limits.max_uncompressed_bytes {
                return Err(SheetError::ZipBomb(format!(
                    "it decompresses to more than {}",
                    human_bytes(limits.max_uncompressed_bytes)
                )));
            }
            if total > RATIO_CHECK_FLOOR && total > ratio_budget {
                return Err(SheetError::ZipBomb(format!(
                    "it decompresses to more than {} times its size",
                    limits.max_compression_ratio
                )));
            }
            if let Some(xml) = &mut xml {
                xml.feed(&buf[..n])
                    .map_err(|row| SheetError::CellTooLarge {
                        row,
                        limit: limits.max_cell_bytes,
                    })?;
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    SharedStrings,
    Worksheet,
    /// Any other XML part: a crafted workbook may point its sheet anywhere, so all are watched.
    OtherXml,
    /// Binary parts (images, VBA) and free-form metadata calamine never reads.
    Other,
}

impl Part {
    fn of(lower_name: &str) -> Part {
        if lower_name.ends_with("sharedstrings.xml") {
            Part::SharedStrings
        } else if !lower_name.ends_with(".xml")
            || lower_name.starts_with("customxml/")
            || lower_name.starts_with("docprops/")
        {
            Part::Other
        } else if lower_name.contains("worksheets/") {
            Part::Worksheet
        } else {
            Part::OtherXml
        }
    }
}

#[derive(Clone, Copy)]
enum State {
    Text,
    Tag,
    /// Inside `<![CDATA[ … ]]>` or `<!-- … -->`, where `<` and `>` do not end anything.
    Bang,
}

/// Length of the tag start kept to read its name and a row's `r` attribute.
const TAG_PREFIX: usize = 64;

/// Byte-level watch on an XML part for anything that would become one huge value: a run of text
/// between tags, one tag (a giant attribute), or one string item (`<si>`, `<is>`) counted whole,
/// markup included, because calamine joins the runs of rich text into one string.
struct XmlScan {
    limit: usize,
    track_rows: bool,
    state: State,
    run: usize,
    tag: [u8; TAG_PREFIX],
    tag_len: usize,
    last_two: [u8; 2],
    in_string: bool,
    string_len: usize,
    row: u64,
}

impl XmlScan {
    fn new(limit: usize, track_rows: bool) -> Self {
        XmlScan {
            limit,
            track_rows,
            state: State::Text,
            run: 0,
            tag: [0; TAG_PREFIX],
            tag_len: 0,
            last_two: [0; 2],
            in_string: false,
            string_len: 0,
            row: 0,
        }
    }

    /// Fails with the current row (0 outside worksheets) when a value passes the limit.
    fn feed(&mut self, data: &[u8]) -> Result<(), u64> {
        for &b in data {
            match self.state {
                State::Text => {
                    if b == b'<' {
                        self.state = State::Tag;
                        self.tag_len = 0;
                        self.run = 0;
                    } else {
                        self.run += 1;
                    }
                }
                State::Tag => {
                    if b == b'>' {
                        self.end_tag();
                        self.state = State::Text;
                        self.run = 0;
                    } else {
                        if self.tag_len < TAG_PREFIX {
                            self.tag[self.tag_len] = b;
                        }
                        self.tag_len += 1;
                        self.run += 1;
                        let prefix = &self.tag[..self.tag_len.min(TAG_PREFIX)];
                        if prefix == b"![CDATA[" || prefix == b"!--" {
                            self.state = State::Bang;
                        }
                    }
                }
                State::Bang => {
                    if b == b'>' && (self.last_two == *b"]]" || self.last_two == *b"--") {
                        self.state = State::Text;
                        self.run = 0;
                    } else {
                        self.run += 1;
                    }
                }
            }
            self.last_two = [self.last_two[1], b];
            if self.in_string {
                self.string_len += 1;
            }
            if self.run > self.limit || self.string_len > self.limit {
                return Err(if self.track_rows { self.row } else { 0 });
            }
        }
        Ok(())
    }

    fn end_tag(&mut self) {
        let tag = &self.tag[..self.tag_len.min(TAG_PREFIX)];
        let (closing, tag) = match tag.strip_prefix(b"/") {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        let self_closing = self.last_two[1] == b'/';
        let name_end = tag
            .iter()
            .position(|b| b.is_ascii_whitespace() || *b == b'/')
            .unwrap_or(tag.len());
        let name = &tag[..name_end];
        let local = match name.iter().position(|b| *b == b':') {
            Some(colon) => &name[colon + 1..],
            None => name,
        };
        match local {
            b"si" | b"is" if closing => {
                self.in_string = false;
                self.string_len = 0;
            }
            b"si" | b"is" if !self_closing => {
                self.in_string = true;
                self.string_len = 0;
            }
            b"row" if !closing && self.track_rows => {
                self.row = row_attribute(&tag[name_end..]).unwrap_or(self.row + 1);
            }
            _ => {}
        }
    }
}

/// Reads ` r="123"` from a `<row` tag's attributes.
fn row_attribute(attrs: &[u8]) -> Option<u64> {
    let at = attrs
        .windows(4)
        .position(|w| w[0].is_ascii_whitespace() && &w[1..] == b"r=\"")?;
    let digits = &attrs[at + 4..];
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(xml: &[u8], limit: usize) -> Result<(), u64> {
        let mut s = XmlScan::new(limit, true);
        // Feed in odd chunks to cross every boundary.
        xml.chunks(3).try_for_each(|c| s.feed(c))
    }

    #[test]
    fn normal_sheet_passes() {
        let xml = br#"<?xml version="1.0"?><worksheet><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>hello</t></is></c></row><row r="2"><c r="A2"><v>12345</v></c></row></sheetData></worksheet>"#;
        assert_eq!(scan_all(xml, 32), Ok(()));
    }

    #[test]
    fn long_text_reports_its_row() {
        let xml = br#"<sheetData><row r="1"><c><v>1</v></c></row><row r="7"><c><v>12345678901234567890</v></c></row>"#;
        assert_eq!(scan_all(xml, 16), Err(7));
    }

    #[test]
    fn rich_text_runs_count_as_one_string() {
        let mut xml = b"<sst><si>".to_vec();
        for _ in 0..20 {
            xml.extend_from_slice(b"<r><t>abc</t></r>");
        }
        xml.extend_from_slice(b"</si></sst>");
        let mut s = XmlScan::new(100, false);
        assert_eq!(s.feed(&xml), Err(0));
        let mut s = XmlScan::new(1000, false);
        assert_eq!(s.feed(&xml), Ok(()));
    }

    #[test]
    fn cdata_cannot_hide_a_long_value() {
        let mut xml = b"<row r=\"3\"><c><v><![CDATA[".to_vec();
        for _ in 0..20 {
            xml.extend_from_slice(b"ab<>");
        }
        xml.extend_from_slice(b"]]></v></c></row>");
        assert_eq!(scan_all(&xml, 50), Err(3));
        assert_eq!(scan_all(&xml, 200), Ok(()));
    }

    #[test]
    fn parts_are_classified() {
        assert!(Part::of("xl/sharedstrings.xml") == Part::SharedStrings);
        assert!(Part::of("xl/worksheets/sheet1.xml") == Part::Worksheet);
        assert!(Part::of("xl/elsewhere/data.xml") == Part::OtherXml);
        assert!(Part::of("xl/worksheets/_rels/sheet1.xml.rels") == Part::Other);
        assert!(Part::of("customxml/item1.xml") == Part::Other);
        assert!(Part::of("xl/media/image1.png") == Part::Other);
    }

    #[test]
    fn rows_without_r_are_counted() {
        let xml = b"<row><c/></row><row><c><v>123456789012345678901234</v></c></row>";
        assert_eq!(scan_all(xml, 16), Err(2));
    }
}
