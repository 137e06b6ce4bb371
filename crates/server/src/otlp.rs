//! Optional export of the request and job-step spans over OTLP/HTTP (protobuf), when
//! `tracing.otlp_endpoint` is set.
//!
//! The exported ids are the ones the rest of the system shows: a span's trace and span id
//! come from the request's or job step's `stampede_core::trace::TraceContext` (the
//! `traceresponse` header, the access log's `trace_id`, the outbox events' `traceparent`), and
//! a request that arrived with a `traceparent` has the caller's span as its parent. Only those
//! two kinds of spans are exported, one per context, so no two spans share an id.
//!
//! Spans are batched and sent from the SDK's own thread every `export_interval`, never on
//! the request path; the HTTP call itself runs on the server's runtime (hyper's client needs
//! one) through [`OnRuntime`].

use crate::config::TracingSettings;
use anyhow::Context;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, SdkTracerProvider,
};
use stampede_core::trace::TraceContext;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// The targets whose spans are exported: the request span and the job-step span.
const SPAN_TARGETS: [&str; 2] = ["stampede_api::request_id", "stampede_workers::runner"];

/// The export layer and the provider to shut down (flushing what is queued) at exit.
pub fn layer<S>(
    settings: &TracingSettings,
) -> anyhow::Result<Option<(impl Layer<S> + use<S>, SdkTracerProvider)>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(endpoint) = &settings.otlp_endpoint else {
        return Ok(None);
    };
    let handle = tokio::runtime::Handle::try_current()
        .context("the OTLP exporter needs the server's runtime")?;
    let client = OnRuntime {
        handle,
        client: opentelemetry_http::hyper::HyperClient::with_default_connector(
            settings.otlp_timeout,
            None,
        ),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint.clone())
        .with_timeout(settings.otlp_timeout)
        .build()
        .context("building the OTLP span exporter")?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(settings.export_interval)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_id_generator(CurrentIds::default())
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("stampede");
    let targets = SPAN_TARGETS.iter().fold(Targets::new(), |t, target| {
        t.with_target(*target, tracing::Level::DEBUG)
    });
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(targets);
    Ok(Some((layer, provider)))
}

/// Ids of the current request or job step (see the module docs); random outside one.
#[derive(Debug, Default)]
struct CurrentIds {
    random: RandomIdGenerator,
}

impl IdGenerator for CurrentIds {
    fn new_trace_id(&self) -> TraceId {
        TraceContext::current()
            .map(|c| TraceId::from(c.trace_id))
            .unwrap_or_else(|| self.random.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        TraceContext::current()
            .map(|c| SpanId::from(c.span_id))
            .unwrap_or_else(|| self.random.new_span_id())
    }
}

/// Runs each export's HTTP call on the server's runtime: the SDK exports from a thread of its
/// own, and hyper's client only works inside a Tokio runtime.
#[derive(Debug)]
struct OnRuntime {
    handle: tokio::runtime::Handle,
    client: opentelemetry_http::hyper::HyperClient,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, HttpError> {
        let client = self.client.clone();
        self.handle
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}
