//! The bench's multipart body read back by axum's `Multipart`, the extractor the server's
//! upload endpoint uses: every field arrives with its name, and the file byte for byte.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::{Request, header};
use stampede_bench::multipart::Form;

#[tokio::test]
async fn the_servers_extractor_reads_the_form_back() -> anyhow::Result<()> {
    // A zip-like binary file: all byte values, CRLFs and dashes, as an XLSX could hold.
    let file: Vec<u8> = b"PK\x03\x04"
        .iter()
        .copied()
        .chain((0..=255u8).chain(*b"\r\n--\r\n----").cycle().take(300_000))
        .collect();
    let form = Form::default()
        .text("template_id", "123")
        .text("name", "bench users.xlsx")
        .file(
            "file",
            "users.xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            &file,
        );
    let req = Request::post("/")
        .header(header::CONTENT_TYPE, form.content_type())
        .body(Body::from(form.finish()))?;
    let mut mp = Multipart::from_request(req, &()).await?;

    let mut seen = Vec::new();
    while let Some(field) = mp.next_field().await? {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let bytes = field.bytes().await?;
        seen.push((name, file_name, bytes));
    }
    assert_eq!(seen.len(), 3);
    assert_eq!(
        (seen[0].0.as_str(), &seen[0].2[..]),
        ("template_id", &b"123"[..])
    );
    assert_eq!(
        (seen[1].0.as_str(), &seen[1].2[..]),
        ("name", &b"bench users.xlsx"[..])
    );
    assert_eq!(seen[2].0, "file");
    assert_eq!(seen[2].1.as_deref(), Some("users.xlsx"));
    assert_eq!(seen[2].2.len(), file.len());
    assert!(seen[2].2[..] == file[..], "the file's bytes changed");
    Ok(())
}
