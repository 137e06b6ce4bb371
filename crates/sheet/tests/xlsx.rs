#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{cells, id, invalid, xlsx};
use rust_xlsxwriter::{ExcelDateTime, Format as CellFormat};
use stampede_sheet::{Format, Limits, RowReader, SheetError, Summary, inspect, sniff};

#[test]
fn numeric_and_text_ids_with_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = xlsx(dir.path(), "upload.dat", |ws| {
        ws.write_string(0, 0, "UserID").unwrap();
        ws.write_string(0, 1, "name").unwrap();
        ws.write_number(1, 0, 42).unwrap();
        ws.write_string(1, 1, "Ann").unwrap();
        ws.write_string(2, 0, " 43 ").unwrap();
        // Row 4 missing entirely; row 5 only styled empty cells: both blank.
        ws.write_blank(4, 0, &CellFormat::new().set_bold()).unwrap();
        ws.write_blank(4, 3, &CellFormat::new().set_bold()).unwrap();
        ws.write_number(5, 0, 9_007_199_254_740_992.0).unwrap();
        ws.write_string(5, 5, "extra columns are ignored").unwrap();
    });
    assert_eq!(sniff(&path).unwrap(), Format::Xlsx);
    assert_eq!(
        inspect(&path, &Limits::default()).unwrap(),
        Summary {
            format: Format::Xlsx,
            data_rows: 3,
            header: true,
            valid_ids: 3
        }
    );
    assert_eq!(
        cells(&path, Format::Xlsx),
        [(2, id(42)), (3, id(43)), (6, id(1 << 53))]
    );
}

#[test]
fn ids_without_header_start_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = xlsx(dir.path(), "ids.xlsx", |ws| {
        ws.write_number(2, 0, 7).unwrap();
        ws.write_string(3, 0, "8").unwrap();
    });
    let summary = inspect(&path, &Limits::default()).unwrap();
    assert!(!summary.header);
    assert_eq!(cells(&path, Format::Xlsx), [(3, id(7)), (4, id(8))]);
}

#[test]
fn invalid_cells_keep_a_readable_raw_value() {
    let dir = tempfile::tempdir().unwrap();
    let date = CellFormat::new().set_num_format("yyyy-mm-dd");
    let path = xlsx(dir.path(), "mixed.xlsx", |ws| {
        ws.write_string(0, 0, "id").unwrap();
        ws.write_number(1, 0, 1).unwrap();
        ws.write_string(2, 0, "abc").unwrap();
        ws.write_number(3, 0, -5).unwrap();
        ws.write_number(4, 0, 0).unwrap();
        ws.write_string(5, 1, "note without id").unwrap();
        ws.write_number(6, 0, 12.5).unwrap();
        ws.write_string(7, 0, "9223372036854775808").unwrap();
        ws.write_number(8, 0, 9_007_199_254_740_994.0).unwrap();
        ws.write_boolean(9, 0, true).unwrap();
        let day = ExcelDateTime::from_ymd(2024, 5, 1).unwrap();
        ws.write_datetime_with_format(10, 0, &day, &date).unwrap();
        ws.write_string(11, 0, "-7").unwrap();
    });
    let summary = inspect(&path, &Limits::default()).unwrap();
    assert_eq!((summary.data_rows, summary.valid_ids), (11, 1));
    assert_eq!(
        cells(&path, Format::Xlsx),
        [
            (2, id(1)),
            (3, invalid("abc")),
            (4, invalid("-5")),
            (5, invalid("0")),
            (6, invalid("")),
            (7, invalid("12.5")),
            (8, invalid("9223372036854775808")),
            (9, invalid("9007199254740994")),
            (10, invalid("TRUE")),
            (11, invalid("2024-05-01")),
            (12, invalid("-7")),
        ]
    );
}

#[test]
fn only_the_first_worksheet_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.xlsx");
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let first = workbook.add_worksheet();
    first.set_name("Kunden").unwrap();
    first.write_number(0, 0, 1).unwrap();
    workbook.add_worksheet().write_number(0, 0, 2).unwrap();
    workbook.save(&path).unwrap();
    assert_eq!(cells(&path, Format::Xlsx), [(1, id(1))]);
}

#[test]
fn dropping_the_reader_early_stops_its_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = xlsx(dir.path(), "many.xlsx", |ws| {
        for r in 0..5_000 {
            ws.write_number(r, 0, r + 1).unwrap();
        }
    });
    for _ in 0..20 {
        let mut reader = RowReader::open(&path, Format::Xlsx, &Limits::default()).unwrap();
        assert_eq!(reader.next().unwrap().unwrap().value, id(1));
        // Dropped with batches pending: must neither hang nor leak a blocked thread.
    }
    let mut reader = RowReader::open(&path, Format::Xlsx, &Limits::default()).unwrap();
    reader.skip_to(4_998).unwrap();
    let rest: Vec<_> = reader.map(|r| r.unwrap().value).collect();
    assert_eq!(rest, [id(4_999), id(5_000)]);
}

#[test]
fn refusals() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default();
    let empty = xlsx(dir.path(), "empty.xlsx", |_| {});
    let header_only = xlsx(dir.path(), "header.xlsx", |ws| {
        ws.write_string(0, 0, "user_id").unwrap();
        ws.write_string(0, 1, "name").unwrap();
    });
    let emails = xlsx(dir.path(), "emails.xlsx", |ws| {
        ws.write_string(0, 0, "email").unwrap();
        ws.write_string(1, 0, "ann@example.com").unwrap();
        ws.write_number(1, 1, 1).unwrap();
        ws.write_string(2, 0, "bob@example.com").unwrap();
        ws.write_number(2, 1, 2).unwrap();
    });
    let column_b = xlsx(dir.path(), "column_b.xlsx", |ws| {
        ws.write_number(0, 1, 1).unwrap();
        ws.write_number(1, 1, 2).unwrap();
    });
    assert!(matches!(inspect(&empty, &limits), Err(SheetError::Empty)));
    assert!(matches!(
        inspect(&header_only, &limits),
        Err(SheetError::NoDataRows)
    ));
    assert!(matches!(
        inspect(&emails, &limits),
        Err(SheetError::NoUserIds)
    ));
    assert!(matches!(
        inspect(&column_b, &limits),
        Err(SheetError::NoUserIds)
    ));
}
