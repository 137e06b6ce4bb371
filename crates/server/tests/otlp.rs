//! OTLP export: the real `stampede` binary, configured with `tracing.otlp_endpoint`, sends its
//! request and job-step spans to a collector this test runs (OTLP/HTTP, protobuf), with the
//! ids the rest of the system shows: a request that came with a `traceparent` is a child of
//! the caller's span in the caller's trace, and its span id is the one `traceresponse` names.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(dead_code)] // the webhook sink is for other tests
mod common;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// A collector: every `POST /v1/traces` body, decoded.
async fn collector() -> (String, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                match ExportTraceServiceRequest::decode(body) {
                    Ok(r) => {
                        sink.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                        axum::http::StatusCode::OK
                    }
                    Err(_) => axum::http::StatusCode::BAD_REQUEST,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1/traces"), received)
}

/// Every span received so far, with its resource's `service.name`.
fn spans(received: &Received) -> Vec<(String, Span)> {
    let mut out = Vec::new();
    for r in received.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        for rs in &r.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|res| res.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                out.extend(ss.spans.iter().map(|s| (service.clone(), s.clone())));
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_job_spans_are_exported_with_the_ids_the_system_shows() {
    let (endpoint, received) = collector().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("stampede.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"{}\"\n[tracing]\notlp_endpoint = \"{endpoint}\"\n\
             service_name = \"stampede-otlp-test\"\nexport_interval_ms = 100\n\
             [workers]\nend_sweep_interval_ms = 100\n",
            dir.path().display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let server = common::serve(&config);
    let client = common::http_client();

    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let r = client
        .get(format!("{}/healthz", server.base))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let answered = r
        .headers()
        .get("traceresponse")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let own_span = answered.split('-').nth(2).unwrap_or_default().to_owned();
    let r = client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let fresh = r
        .headers()
        .get("traceresponse")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let fresh_trace = fresh.split('-').nth(1).unwrap_or_default().to_owned();

    let deadline = Instant::now() + Duration::from_secs(20);
    let (continued, new_trace, job) = loop {
        let all = spans(&received);
        let find = |f: &dyn Fn(&Span) -> bool| all.iter().find(|(_, s)| f(s)).cloned();
        let continued = find(&|s| s.name == "request" && hex(&s.trace_id) == CALLER_TRACE);
        let new_trace = find(&|s| s.name == "request" && hex(&s.trace_id) == fresh_trace);
        let job = find(&|s| s.name == "job");
        if let (Some(c), Some(n), Some(j)) = (&continued, &new_trace, &job) {
            break (c.clone(), n.clone(), j.clone());
        }
        assert!(
            Instant::now() < deadline,
            "spans not exported in time: {} received ({continued:?}, {new_trace:?}, {job:?})",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (service, span) = continued;
    assert_eq!(service, "stampede-otlp-test");
    assert_eq!(hex(&span.span_id), own_span, "the span traceresponse named");
    assert_eq!(
        hex(&span.parent_span_id),
        CALLER_SPAN,
        "a child of the caller's span"
    );
    assert_eq!(attribute(&span, "route").as_deref(), Some("/healthz"));
    assert_eq!(attribute(&span, "method").as_deref(), Some("GET"));
    let (_, span) = new_trace;
    assert!(span.parent_span_id.is_empty(), "a new trace has no parent");
    assert_eq!(
        hex(&span.span_id),
        fresh.split('-').nth(2).unwrap_or_default()
    );
    let (_, span) = job;
    assert!(attribute(&span, "job").is_some(), "{span:?}");
    drop(server);
}
