#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;

use calamine::{Data, Reader, Xlsx, open_workbook};
use stampede_sheet::{FailureRow, Format, WriteError, write_failures};

fn sample() -> Vec<FailureRow> {
    vec![
        FailureRow {
            row: 2,
            user_id: "abc".into(),
            reason: "not a user id".into(),
        },
        FailureRow {
            row: 5,
            user_id: "=HYPERLINK(\"http://evil\")".into(),
            reason: "not a user id".into(),
        },
        FailureRow {
            row: 9,
            user_id: "00042".into(),
            reason: "user 42 already has this coupon".into(),
        },
        FailureRow {
            row: 11,
            user_id: "-3".into(),
            reason: "not a user id, \"quoted\"".into(),
        },
    ]
}

fn ok_rows(rows: Vec<FailureRow>) -> impl Iterator<Item = Result<FailureRow, io::Error>> {
    rows.into_iter().map(Ok)
}

#[test]
fn csv_round_trip_with_formula_guard() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("failures.csv");
    assert_eq!(
        write_failures(&out, Format::Csv, ok_rows(sample())).unwrap(),
        4
    );
    let mut reader = csv::Reader::from_path(&out).unwrap();
    assert_eq!(reader.headers().unwrap(), vec!["row", "user_id", "reason"]);
    let records: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(
        records,
        [
            ["2", "abc", "not a user id"],
            ["5", "'=HYPERLINK(\"http://evil\")", "not a user id"],
            ["9", "00042", "user 42 already has this coupon"],
            ["11", "'-3", "not a user id, \"quoted\""],
        ]
    );
}

#[test]
fn xlsx_round_trip_keeps_ids_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("failures.xlsx");
    assert_eq!(
        write_failures(&out, Format::Xlsx, ok_rows(sample())).unwrap(),
        4
    );
    let mut workbook: Xlsx<_> = open_workbook(&out).unwrap();
    assert_eq!(workbook.sheet_names(), ["Failures"]);
    let range = workbook.worksheet_range("Failures").unwrap();
    let cell = |r: u32, c: u32| range.get_value((r, c)).cloned().unwrap();
    assert_eq!(cell(0, 0), Data::String("row".into()));
    assert_eq!(cell(0, 2), Data::String("reason".into()));
    assert_eq!(cell(1, 0), Data::Float(2.0));
    // Text cells are never formulas in XLSX: kept as typed, leading zeros included.
    assert_eq!(
        cell(2, 1),
        Data::String("=HYPERLINK(\"http://evil\")".into())
    );
    assert_eq!(cell(3, 1), Data::String("00042".into()));
    assert_eq!(cell(4, 1), Data::String("-3".into()));
    assert_eq!(range.height(), 5);
}

#[test]
fn empty_report_has_the_header_only() {
    let dir = tempfile::tempdir().unwrap();
    for format in [Format::Csv, Format::Xlsx] {
        let out = dir.path().join(format!("none.{format}"));
        assert_eq!(write_failures(&out, format, ok_rows(vec![])).unwrap(), 0);
        assert!(std::fs::metadata(&out).unwrap().len() > 0);
    }
}

#[test]
fn a_failing_source_fails_the_write() {
    let dir = tempfile::tempdir().unwrap();
    for format in [Format::Csv, Format::Xlsx] {
        let out = dir.path().join(format!("broken.{format}"));
        let rows = sample()
            .into_iter()
            .map(Ok)
            .chain([Err(io::Error::other("database went away"))]);
        let err = write_failures(&out, format, rows).unwrap_err();
        assert!(matches!(err, WriteError::Rows(_)), "{err:?}");
        assert!(err.to_string().contains("database went away"));
    }
}
