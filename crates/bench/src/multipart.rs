//! A `multipart/form-data` body (RFC 7578) built in memory: text fields and files, one fixed
//! boundary. Enough for the distribution upload; the bench's own memory does not matter.

use hyper::body::Bytes;

/// The boundary the bench uses: long, and made of characters a CSV of user ids or a zip
/// (XLSX) file is vanishingly unlikely to contain after a CRLF and `--`.
pub const BOUNDARY: &str = "----stampede-bench-7f3c9a1e5b2d4c68a0e1f2b3c4d5e6f7";

/// A form being built. Parts are written in the order they are added.
#[derive(Debug)]
pub struct Form {
    boundary: String,
    body: Vec<u8>,
}

impl Default for Form {
    fn default() -> Self {
        Self::new(BOUNDARY)
    }
}

impl Form {
    pub fn new(boundary: &str) -> Self {
        Self {
            boundary: boundary.to_owned(),
            body: Vec::new(),
        }
    }

    /// The request's `Content-Type` header value.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// Adds a text field.
    pub fn text(mut self, name: &str, value: &str) -> Self {
        self.part_head(name, None, None);
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// Adds a file part with its bytes as they are.
    pub fn file(mut self, name: &str, filename: &str, content_type: &str, bytes: &[u8]) -> Self {
        self.body.reserve(bytes.len() + 256);
        self.part_head(name, Some(filename), Some(content_type));
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// Closes the form: the complete body.
    pub fn finish(mut self) -> Bytes {
        self.body.extend_from_slice(b"--");
        self.body.extend_from_slice(self.boundary.as_bytes());
        self.body.extend_from_slice(b"--\r\n");
        Bytes::from(self.body)
    }

    fn part_head(&mut self, name: &str, filename: Option<&str>, content_type: Option<&str>) {
        let b = &mut self.body;
        b.extend_from_slice(b"--");
        b.extend_from_slice(self.boundary.as_bytes());
        b.extend_from_slice(b"\r\nContent-Disposition: form-data; name=\"");
        b.extend_from_slice(quoted(name).as_bytes());
        b.push(b'"');
        if let Some(f) = filename {
            b.extend_from_slice(b"; filename=\"");
            b.extend_from_slice(quoted(f).as_bytes());
            b.push(b'"');
        }
        b.extend_from_slice(b"\r\n");
        if let Some(ct) = content_type {
            b.extend_from_slice(b"Content-Type: ");
            b.extend_from_slice(ct.as_bytes());
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"\r\n");
    }
}

/// A name inside `"..."` of a header parameter: quotes and line breaks percent-encoded, as
/// browsers do (RFC 7578 §4.2 leaves the escaping to the HTML form-submission rules).
fn quoted(s: &str) -> String {
    s.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_boundaries_headers_and_the_file_bytes_intact() {
        // Every byte value, CRLFs and dashes included: the file must come back unchanged.
        let file: Vec<u8> = (0..=255u8)
            .chain(*b"\r\n--\r\n")
            .cycle()
            .take(5_000)
            .collect();
        let form = Form::new("XyZ")
            .text("template_id", "42")
            .text("name", "a \"quoted\" name")
            .file("file", "users.csv", "text/csv", &file);
        assert_eq!(form.content_type(), "multipart/form-data; boundary=XyZ");
        let body = form.finish();

        let mut expected = Vec::new();
        expected.extend_from_slice(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"template_id\"\r\n\r\n42\r\n\
              --XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\na \"quoted\" name\r\n\
              --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"users.csv\"\r\n\
              Content-Type: text/csv\r\n\r\n",
        );
        expected.extend_from_slice(&file);
        expected.extend_from_slice(b"\r\n--XyZ--\r\n");
        assert_eq!(&body[..], &expected[..]);
    }

    #[test]
    fn names_cannot_break_out_of_their_quotes() {
        let body = Form::new("b")
            .file("f", "a\"b\r\nc.csv", "text/csv", b"1")
            .finish();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("filename=\"a%22b%0D%0Ac.csv\"\r\n"), "{text}");
    }

    #[test]
    fn default_form_uses_the_fixed_boundary() {
        let form = Form::default();
        assert_eq!(
            form.content_type(),
            format!("multipart/form-data; boundary={BOUNDARY}")
        );
        assert_eq!(&form.finish()[..], format!("--{BOUNDARY}--\r\n").as_bytes());
    }
}
