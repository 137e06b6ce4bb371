//! The `code` of an RFC 9457 problem+json answer (`{"status": 409, "code": "SOLD_OUT", …}`):
//! what the load counts errors by and what the setups' retry decisions look at.

/// The `code` of a problem+json body, found by a scan rather than a JSON parse (no
/// allocation): the string value following the first `"code"` key.
pub fn problem_code(body: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"code\"";
    let at = body.windows(KEY.len()).position(|w| w == KEY)?;
    let rest = skip_ws(&body[at + KEY.len()..]);
    let rest = skip_ws(rest.strip_prefix(b":")?);
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    (end > 0 && rest[end] == b'"').then(|| &rest[..end])
}

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_problem_codes() {
        let body = br#"{"type":"about:blank","title":"Sold out","status":409, "code" : "SOLD_OUT","request_id":"x"}"#;
        assert_eq!(problem_code(body), Some(&b"SOLD_OUT"[..]));
        assert_eq!(problem_code(b"{}"), None);
        assert_eq!(problem_code(br#"{"code":12}"#), None);
        assert_eq!(problem_code(br#"{"code":""}"#), None);
        assert_eq!(problem_code(br#"{"code":"A"#), None);
    }

    #[test]
    fn takes_the_first_code_key_only() {
        let body = br#"{"code" : "REMINDER_TOO_LATE", "errors": [{"code": "OTHER"}]}"#;
        assert_eq!(problem_code(body), Some(&b"REMINDER_TOO_LATE"[..]));
        assert_eq!(problem_code(br#"{"code":"A\"B"}"#), None);
        assert_eq!(problem_code(b"not json"), None);
    }
}
