//! Builders for the test files: everything hostile is a real file on disk.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use stampede_sheet::{Cell, Format, Limits, Row, RowReader};
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// All data rows of an accepted file.
pub fn rows(path: &Path, format: Format) -> Vec<Row> {
    RowReader::open(path, format, &Limits::default())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// (row number, cell) pairs, the shape most assertions want.
pub fn cells(path: &Path, format: Format) -> Vec<(u64, Cell)> {
    rows(path, format)
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            assert_eq!(r.index, i as u64, "indexes are dense");
            (r.number, r.value)
        })
        .collect()
}

pub fn id(n: i64) -> Cell {
    Cell::UserId(n)
}

pub fn invalid(s: &str) -> Cell {
    Cell::Invalid(s.to_owned())
}

/// Writes a workbook with rust_xlsxwriter (standard mode: shared strings, like Excel).
pub fn xlsx(dir: &Path, name: &str, fill: impl FnOnce(&mut rust_xlsxwriter::Worksheet)) -> PathBuf {
    let path = dir.join(name);
    let mut workbook = rust_xlsxwriter::Workbook::new();
    fill(workbook.add_worksheet());
    workbook.save(&path).unwrap();
    path
}

const MAIN_NS: &str = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
const REL_NS: &str = "http://schemas.openxmlformats.org/package/2006/relationships";
const DOC_REL: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";

pub type Part<'a> = Box<dyn FnOnce(&mut dyn Write) + 'a>;

/// Hand-built XLSX: the minimal parts Excel writes, with the sheet body and an optional shared
/// string table streamed by the caller (so 50 MB parts never sit in memory).
pub fn craft_xlsx(
    path: &Path,
    method: CompressionMethod,
    sheet_data: Part<'_>,
    shared_strings: Option<Part<'_>>,
) {
    let mut zip = zip::ZipWriter::new(BufWriter::new(File::create(path).unwrap()));
    let options = SimpleFileOptions::default().compression_method(method);
    let small = SimpleFileOptions::default();
    let sst_override = if shared_strings.is_some() {
        r#"<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>"#
    } else {
        ""
    };
    zip.start_file("[Content_Types].xml", small).unwrap();
    write!(
        zip,
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>{sst_override}</Types>"#
    )
    .unwrap();
    zip.start_file("_rels/.rels", small).unwrap();
    write!(
        zip,
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="{REL_NS}"><Relationship Id="rId1" Type="{DOC_REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>"#
    )
    .unwrap();
    zip.start_file("xl/workbook.xml", small).unwrap();
    write!(
        zip,
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="{MAIN_NS}" xmlns:r="{DOC_REL}"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>"#
    )
    .unwrap();
    zip.start_file("xl/_rels/workbook.xml.rels", small).unwrap();
    write!(
        zip,
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="{REL_NS}"><Relationship Id="rId1" Type="{DOC_REL}/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="{DOC_REL}/sharedStrings" Target="sharedStrings.xml"/></Relationships>"#
    )
    .unwrap();
    zip.start_file("xl/worksheets/sheet1.xml", options).unwrap();
    write!(
        zip,
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="{MAIN_NS}"><sheetData>"#
    )
    .unwrap();
    sheet_data(&mut zip);
    write!(zip, "</sheetData></worksheet>").unwrap();
    if let Some(strings) = shared_strings {
        zip.start_file("xl/sharedStrings.xml", options).unwrap();
        write!(
            zip,
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><sst xmlns="{MAIN_NS}">"#
        )
        .unwrap();
        strings(&mut zip);
        write!(zip, "</sst>").unwrap();
    }
    zip.finish().unwrap().flush().unwrap();
}

/// Writes `len` copies of `byte` in 64 KiB chunks.
pub fn repeat(out: &mut dyn Write, byte: u8, len: usize) {
    let chunk = [byte; 64 << 10];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        out.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
}

/// Peak resident memory of this test process, in bytes (Linux).
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}
