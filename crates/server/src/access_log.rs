//! The access line's formatter. Every request writes one, so it is formatted by hand (the
//! same JSON object the generic formatter would make, same keys in the same order) instead
//! of through the generic field visitor, serde map and timestamp formatter: measured, that
//! took a quarter of a `/healthz` request. Every other event goes to the generic JSON
//! formatter.

use std::cell::RefCell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use stampede_api::request_id::ACCESS_TARGET as TARGET;

pub struct AccessOrJson {
    pub json: Format<Json>,
}

impl<S, N> FormatEvent<S, N> for AccessOrJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if meta.target() != TARGET {
            return self.json.format_event(ctx, writer, event);
        }
        let mut line = AccessLine::default();
        event.record(&mut line);
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\",\"message\":", meta.level())?;
        json_str(&mut writer, line.message.as_deref().unwrap_or("request"))?;
        writer.write_str(&line.fields)?;
        writer.write_str(",\"target\":\"")?;
        writer.write_str(TARGET)?;
        writer.write_str("\"}\n")
    }
}

/// The event's fields as `,"key":value` pairs in the order they were given.
#[derive(Default)]
struct AccessLine {
    message: Option<String>,
    fields: String,
}

impl AccessLine {
    fn key(&mut self, field: &Field) {
        self.fields.push_str(",\"");
        self.fields.push_str(field.name());
        self.fields.push_str("\":");
    }
}

impl Visit for AccessLine {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_str(&mut self.fields, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        self.fields.push_str(itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        self.fields.push_str(itoa::Buffer::new().format(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.key(field);
            push_json_str(&mut self.fields, &text);
        }
    }
}

fn plain(s: &str) -> bool {
    s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

fn push_json_str(out: &mut String, s: &str) {
    if plain(s) {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::from(s).to_string());
    }
}

/// A JSON string: plain text is written as is, anything that needs escaping goes through
/// serde_json.
fn json_str(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    if plain(s) {
        w.write_char('"')?;
        w.write_str(s)?;
        w.write_char('"')
    } else {
        let quoted = serde_json::to_string(s).map_err(|_| fmt::Error)?;
        w.write_str(&quoted)
    }
}

thread_local! {
    /// The last second formatted on this thread (`YYYY-MM-DDTHH:MM:SS`).
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// RFC 3339 UTC with microseconds, like the generic formatter; the date and time part is
/// formatted once per second.
fn write_timestamp(w: &mut Writer<'_>) -> fmt::Result {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let ts = i64::try_from(secs)
                .ok()
                .and_then(|s| jiff::Timestamp::from_second(s).ok())
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let text = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
            *cached = (secs, text);
        }
        w.write_str(&cached.1)
    })?;
    write!(w, ".{:06}Z", since.subsec_micros())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    fn lines(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let out = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .event_format(AccessOrJson {
                json: tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            })
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn access_lines_are_the_json_the_generic_formatter_writes() {
        let got = lines(|| {
            tracing::info!(
                target: TARGET,
                request_id = "abc-1",
                method = "GET",
                route = "/x/\"quoted\"\\",
                status = 200u16,
                micros = 31u64,
                "request"
            );
            tracing::warn!(answer = 42, "something else");
        });
        assert_eq!(got.len(), 2);
        let a = &got[0];
        assert_eq!(a["level"], "INFO");
        assert_eq!(a["message"], "request");
        assert_eq!(a["request_id"], "abc-1");
        assert_eq!(a["method"], "GET");
        assert_eq!(a["route"], "/x/\"quoted\"\\");
        assert_eq!(a["status"], 200);
        assert_eq!(a["micros"], 31);
        assert_eq!(a["target"], TARGET);
        let ts = a["timestamp"].as_str().unwrap();
        assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");
        assert_eq!(ts.len(), "2026-12-03T18:13:08.144615Z".len(), "{ts}");
        assert_eq!(got[1]["message"], "something else");
        assert_eq!(got[1]["answer"], 42);
        assert_eq!(got[1]["level"], "WARN");
    }
}
