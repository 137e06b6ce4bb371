//! What a row's first cell means: a user id or an invalid value, and the header rule.

/// One data row of a sheet: its position and the value of its first column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1-based row number as a spreadsheet shows it (the header is row 1). For CSV this is the
    /// line the record starts on.
    pub number: u64,
    /// 0-based index among data rows; the header and blank rows have none.
    pub index: u64,
    /// The first column's value.
    pub value: Cell,
}

/// The first column of a data row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    UserId(i64),
    /// The raw value as the uploader would recognise it: trimmed, at most
    /// [`MAX_RAW_CHARS`] characters (then cut and ended with `…`). Empty when column A is empty.
    Invalid(String),
}

/// Longest raw value kept in [`Cell::Invalid`]: enough to recognise it in a failure report.
pub const MAX_RAW_CHARS: usize = 100;

/// Largest integer a spreadsheet number (an f64) holds exactly: above it an id may have been
/// rounded already, so it cannot be trusted.
const MAX_EXACT_NUMBER: f64 = 9_007_199_254_740_992.0; // 2^53

/// Parses a user id written as text: trimmed ASCII digits only (no sign, no decimal point, no
/// exponent), at most 19 digits, value 1..=i64::MAX.
pub fn parse_user_id(raw: &str) -> Option<i64> {
    let s = raw.trim();
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok().filter(|id| *id >= 1)
}

/// A user id held as a spreadsheet number: integral and within 1..=2^53.
pub fn number_to_user_id(n: f64) -> Option<i64> {
    if n.is_finite() && n.fract() == 0.0 && (1.0..=MAX_EXACT_NUMBER).contains(&n) {
        Some(n as i64)
    } else {
        None
    }
}

/// The first cell of a row, as read from either format, before it is judged.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum First {
    /// Missing, empty or whitespace only.
    Empty,
    Text(String),
    Number(f64),
    Int(i64),
    /// Booleans, errors and dates, already rendered for people.
    Other(String),
}

impl First {
    /// The header rule: non-empty text not starting with an ASCII digit, `+` or `-`.
    pub(crate) fn is_header(&self) -> bool {
        match self {
            First::Text(s) => s
                .trim()
                .bytes()
                .next()
                .is_some_and(|b| !(b.is_ascii_digit() || b == b'+' || b == b'-')),
            _ => false,
        }
    }

    pub(crate) fn into_cell(self) -> Cell {
        match self {
            First::Empty => Cell::Invalid(String::new()),
            First::Text(s) => match parse_user_id(&s) {
                Some(id) => Cell::UserId(id),
                None => Cell::Invalid(clip_raw(&s)),
            },
            First::Number(n) => match number_to_user_id(n) {
                Some(id) => Cell::UserId(id),
                None => Cell::Invalid(clip_raw(&n.to_string())),
            },
            First::Int(i) => match number_to_user_id(i as f64).filter(|id| *id == i) {
                Some(id) => Cell::UserId(id),
                None => Cell::Invalid(i.to_string()),
            },
            First::Other(s) => Cell::Invalid(clip_raw(&s)),
        }
    }
}

/// Trims and cuts a raw value to [`MAX_RAW_CHARS`] characters, on a character boundary.
pub(crate) fn clip_raw(raw: &str) -> String {
    let s = raw.trim();
    match s.char_indices().nth(MAX_RAW_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_ids() {
        assert_eq!(parse_user_id("42"), Some(42));
        assert_eq!(parse_user_id("  007 "), Some(7));
        assert_eq!(parse_user_id("9223372036854775807"), Some(i64::MAX));
        for bad in [
            "",
            " ",
            "0",
            "-1",
            "+1",
            "1.0",
            "1e3",
            "abc",
            "12a",
            "9223372036854775808",
            "00000000000000000001",
        ] {
            assert_eq!(parse_user_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn number_ids() {
        assert_eq!(number_to_user_id(1.0), Some(1));
        assert_eq!(number_to_user_id(MAX_EXACT_NUMBER), Some(1 << 53));
        assert_eq!(number_to_user_id(MAX_EXACT_NUMBER + 2.0), None);
        assert_eq!(number_to_user_id(0.0), None);
        assert_eq!(number_to_user_id(-3.0), None);
        assert_eq!(number_to_user_id(1.5), None);
        assert_eq!(number_to_user_id(f64::NAN), None);
    }

    #[test]
    fn header_rule() {
        assert!(First::Text("user_id".into()).is_header());
        assert!(First::Text(" UserID".into()).is_header());
        assert!(!First::Text("123".into()).is_header());
        assert!(!First::Text("+49".into()).is_header());
        assert!(!First::Text("-".into()).is_header());
        assert!(!First::Empty.is_header());
        assert!(!First::Number(1.0).is_header());
    }

    #[test]
    fn raw_values_are_clipped_on_char_boundaries() {
        let long = "é".repeat(150);
        let clipped = clip_raw(&long);
        assert_eq!(clipped.chars().count(), MAX_RAW_CHARS + 1);
        assert!(clipped.ends_with('…'));
        assert_eq!(clip_raw("  x "), "x");
        assert_eq!(
            First::Number(1e20).into_cell(),
            Cell::Invalid("100000000000000000000".into())
        );
    }
}
