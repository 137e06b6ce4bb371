//! The format comes from the bytes, never from the name: every file here is named `.xlsx`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::write;
use stampede_sheet::{Format, Limits, SheetError, inspect, sniff};
use zip::write::SimpleFileOptions;

fn unsupported(path: &Path) -> String {
    match sniff(path) {
        Err(SheetError::UnsupportedFormat(what)) => what,
        other => panic!("{}: {other:?}", path.display()),
    }
}

fn zip_with(dir: &Path, name: &str, entries: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
    for entry in entries {
        zip.start_file(*entry, SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"<x/>").unwrap();
    }
    zip.finish().unwrap();
    path
}

#[test]
fn images_documents_and_binary_are_refused_with_what_they_look_like() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let png = write(d, "a.xlsx", b"\x89PNG\r\n\x1A\n\0\0\0\rIHDR");
    let pdf = write(d, "b.xlsx", b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n");
    let jpeg = write(d, "c.xlsx", b"\xFF\xD8\xFF\xE0\0\x10JFIF\0");
    let xls = write(d, "d.xlsx", b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1\0\0\0\0");
    // Deterministic noise with NUL bytes, as any binary file has.
    let noise: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let random = write(d, "e.xlsx", &noise);
    let html = write(
        d,
        "f.xlsx",
        b"<html><table><tr><td>1</td></tr></table></html>",
    );
    let utf16 = write(d, "g.xlsx", b"\xFF\xFE1\x002\x00");

    assert_eq!(unsupported(&png), "a PNG image");
    assert_eq!(unsupported(&pdf), "a PDF document");
    assert_eq!(unsupported(&jpeg), "a JPEG image");
    assert!(unsupported(&xls).contains("(.xls)"));
    assert_eq!(unsupported(&random), "binary data");
    assert_eq!(unsupported(&html), "an HTML or XML document");
    assert!(unsupported(&utf16).contains("UTF-16"));

    let err = inspect(&xls, &Limits::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("not a CSV or XLSX file: looks like a legacy Excel"),
        "{err}"
    );
}

#[test]
fn zips_that_are_not_workbooks() {
    let dir = tempfile::tempdir().unwrap();
    let plain = zip_with(dir.path(), "plain.xlsx", &["readme.txt", "data/ids.csv"]);
    let ods = zip_with(dir.path(), "sheet.xlsx", &["mimetype", "content.xml"]);
    let docx = zip_with(
        dir.path(),
        "doc.xlsx",
        &["[Content_Types].xml", "word/document.xml"],
    );
    let workbook = zip_with(
        dir.path(),
        "book.bin",
        &["[Content_Types].xml", "xl/workbook.xml"],
    );
    assert_eq!(
        unsupported(&plain),
        "a zip archive that is not an XLSX workbook"
    );
    assert!(unsupported(&ods).contains(".ods"));
    assert_eq!(unsupported(&docx), "a Word document");
    assert_eq!(sniff(&workbook).unwrap(), Format::Xlsx);
    // Shaped like a workbook but without a real one inside: unreadable, not a crash.
    assert!(matches!(
        inspect(&workbook, &Limits::default()),
        Err(SheetError::Corrupt(_))
    ));
}

#[test]
fn truncated_zip_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "cut.xlsx", b"PK\x03\x04\x14\0\0\0\x08\0");
    assert!(matches!(sniff(&path), Err(SheetError::Corrupt(_))));
}

#[test]
fn empty_file_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "empty.xlsx", b"");
    assert!(matches!(sniff(&path), Err(SheetError::Empty)));
    assert!(matches!(
        inspect(&path, &Limits::default()),
        Err(SheetError::Empty)
    ));
}

#[test]
fn a_missing_file_is_our_io_error() {
    let err = sniff(Path::new("/nonexistent/upload")).unwrap_err();
    assert!(matches!(err, SheetError::Io(_)));
    assert!(!err.is_client_error());
}
