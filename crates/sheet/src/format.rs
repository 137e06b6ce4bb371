//! The two accepted formats, and how a file's format is recognised from its bytes.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::SheetError;

/// A spreadsheet format this crate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Csv,
    Xlsx,
}

impl Format {
    /// The lower-case name used in URLs and file extensions.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
        }
    }

    /// Parses `csv` or `xlsx`, in any case.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("csv") {
            Some(Format::Csv)
        } else if s.eq_ignore_ascii_case("xlsx") {
            Some(Format::Xlsx)
        } else {
            None
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much of the file's start is looked at to tell text from binary.
pub(crate) const SNIFF_BYTES: usize = 64 << 10;

pub(crate) const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Magic numbers of formats people upload by mistake, with what to tell them.
const MAGICS: &[(&[u8], &str)] = &[
    (
        b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1",
        "a legacy Excel 97-2003 workbook (.xls) or a password-protected workbook; save it as \
         .xlsx without a password, or as CSV",
    ),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG\r\n\x1A\n", "a PNG image"),
    (b"\xFF\xD8\xFF", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x1F\x8B", "a gzip archive"),
    (b"7z\xBC\xAF\x27\x1C", "a 7-Zip archive"),
    (b"Rar!\x1A\x07", "a RAR archive"),
    (b"PK\x05\x06", "an empty zip archive"),
    (
        b"\xFF\xFE",
        "UTF-16 text (Excel's \"Unicode Text\"); save it as \"CSV UTF-8\"",
    ),
    (
        b"\xFE\xFF",
        "UTF-16 text (Excel's \"Unicode Text\"); save it as \"CSV UTF-8\"",
    ),
    (b"{\\rtf", "an RTF document"),
];

/// Decides the format by content, never by file name: an XLSX is a zip holding
/// `[Content_Types].xml` and `xl/workbook.xml`; CSV is UTF-8 text (optional BOM) without NUL
/// bytes in its first 64 KiB. Anything else is [`SheetError::UnsupportedFormat`], saying what it
/// looks like; a file without bytes is [`SheetError::Empty`].
pub fn sniff(path: &Path) -> Result<Format, SheetError> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    File::open(path)?
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)?;
    if head.is_empty() {
        return Err(SheetError::Empty);
    }
    if head.starts_with(b"PK\x03\x04") {
        return sniff_zip(path);
    }
    if let Some((_, what)) = MAGICS.iter().find(|(magic, _)| head.starts_with(magic)) {
        return Err(SheetError::UnsupportedFormat((*what).to_owned()));
    }
    sniff_text(&head).map_err(|what| SheetError::UnsupportedFormat(what.to_owned()))
}

fn sniff_text(head: &[u8]) -> Result<Format, &'static str> {
    let body = head.strip_prefix(UTF8_BOM).unwrap_or(head);
    if body.contains(&0) {
        return Err("binary data");
    }
    if let Err(e) = std::str::from_utf8(body) {
        // A character cut by the 64 KiB window is not an error.
        let cut_at_end = e.error_len().is_none() && head.len() == SNIFF_BYTES;
        if !cut_at_end {
            return Err("text that is not UTF-8; save it as \"CSV UTF-8\"");
        }
    }
    if body.trim_ascii_start().starts_with(b"<") {
        // Some tools export HTML or SpreadsheetML tables under an .xls name.
        return Err("an HTML or XML document");
    }
    Ok(Format::Csv)
}

fn sniff_zip(path: &Path) -> Result<Format, SheetError> {
    let file = BufReader::new(File::open(path)?);
    let zip = zip::ZipArchive::new(file).map_err(|e| {
        SheetError::Corrupt(format!("the zip archive is truncated or damaged ({e})"))
    })?;
    let has = |wanted: &str| {
        zip.file_names()
            .any(|name| name.is_ok_and(|n| n.eq_ignore_ascii_case(wanted)))
    };
    if has("[Content_Types].xml") && has("xl/workbook.xml") {
        return Ok(Format::Xlsx);
    }
    let what = if has("xl/workbook.bin") {
        "an Excel binary workbook (.xlsb); save it as .xlsx or CSV"
    } else if has("mimetype") && has("content.xml") {
        "an OpenDocument file (.ods); save it as .xlsx or CSV"
    } else if has("word/document.xml") {
        "a Word document"
    } else if has("ppt/presentation.xml") {
        "a PowerPoint presentation"
    } else {
        "a zip archive that is not an XLSX workbook"
    };
    Err(SheetError::UnsupportedFormat(what.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in [Format::Csv, Format::Xlsx] {
            assert_eq!(Format::parse(f.as_str()), Some(f));
        }
        assert_eq!(Format::parse("XLSX"), Some(Format::Xlsx));
        assert_eq!(Format::parse("xls"), None);
    }

    #[test]
    fn text_is_csv_unless_binary_or_markup() {
        assert_eq!(sniff_text(b"user_id\n1\n"), Ok(Format::Csv));
        assert_eq!(sniff_text(b"\xEF\xBB\xBF1\n"), Ok(Format::Csv));
        assert!(sniff_text(b"1\n\0\0").is_err());
        assert!(sniff_text(b"caf\xE9\n").is_err());
        assert!(sniff_text(b"  <html><table>").is_err());
    }

    #[test]
    fn a_character_cut_by_the_window_is_fine() {
        let mut head = vec![b'1'; SNIFF_BYTES - 1];
        head.push(0xC3); // first byte of 'é'
        assert_eq!(sniff_text(&head), Ok(Format::Csv));
    }
}
