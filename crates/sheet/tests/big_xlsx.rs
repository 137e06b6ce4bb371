//! A workbook with a million unique shared strings, crafted by hand because rust_xlsxwriter's
//! constant-memory mode writes inline strings and its standard mode would hold the sheet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use common::craft_xlsx;
use stampede_sheet::{Cell, Format, Limits, RowReader, SheetError, inspect};
use zip::CompressionMethod;

const STRINGS: u32 = 1_000_000;
/// Rows in the sheet: enough to reference strings across the whole table. Streaming a million
/// rows is covered by the CSV test; unoptimised calamine would make this one slow.
const ROWS: u32 = 50_000;

#[test]
fn a_million_unique_shared_strings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("million.xlsx");
    craft_xlsx(
        &path,
        CompressionMethod::Stored,
        Box::new(|out| {
            let mut out = std::io::BufWriter::new(out);
            write!(
                out,
                r#"<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row>"#
            )
            .unwrap();
            let step = STRINGS / ROWS;
            for i in 1..=ROWS {
                let r = i + 1;
                // Ids in column A, a name from anywhere in the string table in column B.
                write!(
                    out,
                    r#"<row r="{r}"><c r="A{r}"><v>{i}</v></c><c r="B{r}" t="s"><v>{}</v></c></row>"#,
                    1 + i * step
                )
                .unwrap();
            }
            out.flush().unwrap();
        }),
        Some(Box::new(|out| {
            let mut out = std::io::BufWriter::new(out);
            write!(out, "<si><t>user_id</t></si><si><t>name</t></si>").unwrap();
            for i in 1..=STRINGS {
                write!(out, "<si><t>customer {i:07}</t></si>").unwrap();
            }
            out.flush().unwrap();
        })),
    );

    let summary = inspect(&path, &Limits::default()).unwrap();
    assert!(summary.header);
    assert_eq!(
        (summary.data_rows, summary.valid_ids),
        (u64::from(ROWS), u64::from(ROWS))
    );

    let mut count = 0u64;
    for (i, row) in RowReader::open(&path, Format::Xlsx, &Limits::default())
        .unwrap()
        .enumerate()
    {
        let row = row.unwrap();
        let i = i as u64;
        assert_eq!((row.index, row.number), (i, i + 2));
        assert_eq!(row.value, Cell::UserId(i as i64 + 1));
        count += 1;
    }
    assert_eq!(count, u64::from(ROWS));

    let small = Limits {
        max_shared_strings_bytes: 1 << 20,
        ..Limits::default()
    };
    let err = inspect(&path, &small).unwrap_err();
    assert!(
        matches!(err, SheetError::SharedStringsTooLarge { limit } if limit == 1 << 20),
        "{err:?}"
    );
}
