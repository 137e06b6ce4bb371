#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::io::{BufWriter, Write};

use common::{cells, id, invalid, write};
use stampede_sheet::{Format, Limits, RowReader, SheetError, Summary, inspect, sniff};

#[test]
fn ids_with_header_extra_columns_and_blank_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "upload.bin",
        b"\xEF\xBB\xBFuser_id,name\r\n42,Ann\r\n\r\n, ,\r\n 7 ,Bob,extra\r\n\"9\",\"quoted, name\"\r\n",
    );
    assert_eq!(sniff(&path).unwrap(), Format::Csv);
    assert_eq!(
        inspect(&path, &Limits::default()).unwrap(),
        Summary {
            format: Format::Csv,
            data_rows: 3,
            header: true,
            valid_ids: 3
        }
    );
    assert_eq!(
        cells(&path, Format::Csv),
        [(2, id(42)), (5, id(7)), (6, id(9))]
    );
}

#[test]
fn ids_without_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "ids.csv", b"\n1\n2\n\n3");
    let summary = inspect(&path, &Limits::default()).unwrap();
    assert!(!summary.header);
    assert_eq!(summary.data_rows, 3);
    assert_eq!(
        cells(&path, Format::Csv),
        [(2, id(1)), (3, id(2)), (5, id(3))]
    );
}

#[test]
fn row_numbers_follow_lines_through_quoted_newlines() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "notes.csv",
        b"id,note\n1,\"two\nlines\"\n\n3,x\n",
    );
    assert_eq!(cells(&path, Format::Csv), [(2, id(1)), (5, id(3))]);
}

#[test]
fn semicolon_files_keep_the_id_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "de.csv",
        "Kundennummer;Name\n17;Müller\n18;Groß\n".as_bytes(),
    );
    assert_eq!(cells(&path, Format::Csv), [(2, id(17)), (3, id(18))]);
}

#[test]
fn invalid_ids_keep_their_raw_value() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(150);
    let text = format!(
        "id,note\n1\nabc\n-5\n0\n,has a note\n12.0\n9223372036854775808\n9223372036854775807\n+3\n1e5\n{long}\n"
    );
    let path = write(dir.path(), "mixed.csv", text.as_bytes());
    let summary = inspect(&path, &Limits::default()).unwrap();
    assert_eq!((summary.data_rows, summary.valid_ids), (11, 2));
    let got = cells(&path, Format::Csv);
    assert_eq!(
        got[..10],
        [
            (2, id(1)),
            (3, invalid("abc")),
            (4, invalid("-5")),
            (5, invalid("0")),
            (6, invalid("")),
            (7, invalid("12.0")),
            (8, invalid("9223372036854775808")),
            (9, id(i64::MAX)),
            (10, invalid("+3")),
            (11, invalid("1e5")),
        ]
    );
    assert_eq!(got[10], (12, invalid(&format!("{}…", "x".repeat(100)))));
}

#[test]
fn empty_header_only_and_wrong_columns_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default();
    let cases: [(&str, &[u8]); 5] = [
        ("empty", b""),
        ("blank", b"\n \n,,\n"),
        ("header", b"user_id,name\n\n"),
        (
            "emails",
            b"email,id\nann@example.com,1\nbob@example.com,2\n",
        ),
        ("column_b", b",1\n,2\n"),
    ];
    let errors: Vec<_> = cases
        .iter()
        .map(|(name, bytes)| inspect(&write(dir.path(), name, bytes), &limits).unwrap_err())
        .collect();
    assert!(matches!(errors[0], SheetError::Empty), "{:?}", errors[0]);
    assert!(matches!(errors[1], SheetError::Empty), "{:?}", errors[1]);
    assert!(
        matches!(errors[2], SheetError::NoDataRows),
        "{:?}",
        errors[2]
    );
    assert!(
        matches!(errors[3], SheetError::NoUserIds),
        "{:?}",
        errors[3]
    );
    assert!(
        matches!(errors[4], SheetError::NoUserIds),
        "{:?}",
        errors[4]
    );
    assert!(errors.iter().all(SheetError::is_client_error));
}

#[test]
fn non_utf8_text_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "latin1.csv", b"id,name\n1,Jos\xE9\n");
    assert!(matches!(
        inspect(&path, &Limits::default()),
        Err(SheetError::UnsupportedFormat(_))
    ));
}

#[test]
fn too_many_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "ids.csv", b"1\n2\n3\n4\n");
    let limits = Limits {
        max_rows: 3,
        ..Limits::default()
    };
    assert!(matches!(
        inspect(&path, &limits),
        Err(SheetError::TooManyRows { limit: 3 })
    ));
}

#[test]
fn a_million_rows_are_counted_exactly_and_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv");
    let mut out = BufWriter::new(File::create(&path).unwrap());
    writeln!(out, "user_id").unwrap();
    for i in 1..=1_000_000u32 {
        if i % 1000 == 0 {
            writeln!(out, "not-an-id").unwrap();
        } else {
            writeln!(out, "{i}").unwrap();
        }
    }
    out.flush().unwrap();
    drop(out);

    let summary = inspect(&path, &Limits::default()).unwrap();
    assert_eq!(summary.data_rows, 1_000_000);
    assert_eq!(summary.valid_ids, 999_000);

    let mut reader = RowReader::open(&path, Format::Csv, &Limits::default()).unwrap();
    reader.skip_to(999_998).unwrap();
    let tail: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(tail.len(), 2);
    assert_eq!(
        (tail[0].index, tail[0].number, &tail[0].value),
        (999_998, 1_000_000, &id(999_999))
    );
    assert_eq!(tail[1].value, invalid("not-an-id"));
}
