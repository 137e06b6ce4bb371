//! Hostile uploads, each a real file on disk. Every test also checks the peak memory of this
//! test process: none of them may hold a 50 MB cell or the decompressed bomb in memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use common::{craft_xlsx, peak_rss, repeat};
use stampede_sheet::{Format, Limits, RowReader, SheetError, inspect};
use zip::CompressionMethod;

const FIFTY_MB: usize = 50 << 20;

/// Far below the 50 MB any of these files would need if read whole.
const MAX_PEAK: u64 = 24 << 20;

fn assert_small_peak() {
    let peak = peak_rss();
    assert!(peak < MAX_PEAK, "peak RSS {} MiB", peak >> 20);
}

fn first_row(out: &mut dyn Write) {
    write!(out, r#"<row r="1"><c r="A1"><v>1</v></c></row>"#).unwrap();
}

fn bomb(dir: &Path) -> PathBuf {
    let path = dir.join("bomb.xlsx");
    craft_xlsx(
        &path,
        CompressionMethod::Deflated,
        Box::new(|out| {
            first_row(out);
            // Short tags: nothing here looks like a long cell, only the volume is hostile.
            let pattern = b"<x/>".repeat(16 << 10);
            for _ in 0..FIFTY_MB / pattern.len() {
                out.write_all(&pattern).unwrap();
            }
        }),
        None,
    );
    path
}

#[test]
fn zip_bomb_is_refused_by_size_and_by_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let path = bomb(dir.path());
    assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
    let small = Limits {
        max_uncompressed_bytes: 8 << 20,
        ..Limits::default()
    };
    let err = inspect(&path, &small).unwrap_err();
    assert!(matches!(err, SheetError::ZipBomb(_)), "{err:?}");
    assert!(err.to_string().contains("8 MiB"), "{err}");
    // Default limits: 50 MiB is under 2 GiB, but the ratio gives it away past 16 MiB.
    let err = inspect(&path, &Limits::default()).unwrap_err();
    assert!(matches!(err, SheetError::ZipBomb(_)), "{err:?}");
    assert!(err.to_string().contains("times its size"), "{err}");
    assert_small_peak();
}

#[test]
fn zip_bomb_lying_about_its_size_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = bomb(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Declare 1000 bytes for every entry, in local and central headers alike.
    let mut patched = 0;
    for (signature, size_at) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
        let mut at = 0;
        while let Some(found) = bytes[at..].windows(4).position(|w| w == signature) {
            let start = at + found;
            bytes[start + size_at..start + size_at + 4].copy_from_slice(&1000u32.to_le_bytes());
            patched += 1;
            at = start + 4;
        }
    }
    assert!(patched >= 10);
    std::fs::write(&path, &bytes).unwrap();
    let small = Limits {
        max_uncompressed_bytes: 8 << 20,
        ..Limits::default()
    };
    let err = inspect(&path, &small).unwrap_err();
    assert!(
        matches!(err, SheetError::ZipBomb(_) | SheetError::Corrupt(_)),
        "{err:?}"
    );
    assert_small_peak();
}

#[test]
fn fifty_mb_inline_cell_in_xlsx() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cell.xlsx");
    craft_xlsx(
        &path,
        CompressionMethod::Stored,
        Box::new(|out| {
            first_row(out);
            write!(out, r#"<row r="2"><c r="A2" t="inlineStr"><is><t>"#).unwrap();
            repeat(out, b'a', FIFTY_MB);
            write!(out, "</t></is></c></row>").unwrap();
        }),
        None,
    );
    let err = inspect(&path, &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            SheetError::CellTooLarge {
                row: 2,
                limit: 65536
            }
        ),
        "{err:?}"
    );
    assert_small_peak();
}

#[test]
fn fifty_mb_shared_string_in_xlsx() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sst.xlsx");
    craft_xlsx(
        &path,
        CompressionMethod::Stored,
        Box::new(|out| {
            first_row(out);
            write!(out, r#"<row r="2"><c r="A2" t="s"><v>0</v></c></row>"#).unwrap();
        }),
        Some(Box::new(|out| {
            write!(out, "<si><t>").unwrap();
            repeat(out, b'b', FIFTY_MB);
            write!(out, "</t></si>").unwrap();
        })),
    );
    let err = inspect(&path, &Limits::default()).unwrap_err();
    assert!(
        matches!(err, SheetError::CellTooLarge { row: 0, .. }),
        "{err:?}"
    );
    assert_small_peak();
}

#[test]
fn shared_string_built_from_many_short_runs_is_one_cell() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rich.xlsx");
    craft_xlsx(
        &path,
        CompressionMethod::Deflated,
        Box::new(|out| {
            write!(out, r#"<row r="1"><c r="A1" t="s"><v>0</v></c></row>"#).unwrap();
        }),
        Some(Box::new(|out| {
            write!(out, "<si>").unwrap();
            for _ in 0..100_000 {
                out.write_all(b"<r><t>0123456789</t></r>").unwrap();
            }
            write!(out, "</si>").unwrap();
        })),
    );
    let err = inspect(&path, &Limits::default()).unwrap_err();
    assert!(matches!(err, SheetError::CellTooLarge { .. }), "{err:?}");
}

fn csv_with_giant_row(dir: &Path, name: &str, giant: impl FnOnce(&mut dyn Write)) -> PathBuf {
    let path = dir.join(name);
    let mut out = BufWriter::new(File::create(&path).unwrap());
    out.write_all(b"user_id\n1\n").unwrap();
    giant(&mut out);
    out.write_all(b"\n2\n").unwrap();
    out.flush().unwrap();
    path
}

#[test]
fn fifty_mb_csv_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = csv_with_giant_row(dir.path(), "field.csv", |out| {
        out.write_all(b"3,").unwrap();
        repeat(out, b'c', FIFTY_MB);
    });
    let err = inspect(&path, &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            SheetError::CellTooLarge {
                row: 3,
                limit: 65536
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "row 3 has a cell longer than 64 KiB");

    // The streaming reader gives the good rows, then the same refusal.
    let mut rows = RowReader::open(&path, Format::Csv, &Limits::default()).unwrap();
    assert_eq!(rows.next().unwrap().unwrap().number, 2);
    assert!(matches!(
        rows.next(),
        Some(Err(SheetError::CellTooLarge { row: 3, .. }))
    ));
    assert!(rows.next().is_none());
    assert_small_peak();
}

#[test]
fn fifty_mb_quoted_csv_field_made_of_short_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = csv_with_giant_row(dir.path(), "quoted.csv", |out| {
        out.write_all(b"3,\"").unwrap();
        let line = [b"x".repeat(99), b"\n".to_vec()].concat();
        for _ in 0..FIFTY_MB / line.len() {
            out.write_all(&line).unwrap();
        }
        out.write_all(b"\"").unwrap();
    });
    let err = inspect(&path, &Limits::default()).unwrap_err();
    assert!(
        matches!(err, SheetError::CellTooLarge { row: 3, .. }),
        "{err:?}"
    );
    assert_small_peak();
}
