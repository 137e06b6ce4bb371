//! Outbox events the use cases and adapters record: their kinds, stable ids (brokers
//! deduplicate on them) and payloads. Each is written in the transaction of the change it
//! records.

use crate::claim_ports::{ClaimRecord, OutboxEvent};
use stampede_domain::coupon::UserCoupon;
use stampede_domain::distribution::DistributionTask;
use stampede_domain::template::{Template, TemplateStatus};
use stampede_domain::time::to_ms;

/// The JSON payload of a `coupon.claimed` outbox event.
pub fn claimed_event_payload(c: &UserCoupon) -> String {
    serde_json::to_string(c).unwrap_or_default()
}

/// Kind of the event a claim writes to the outbox.
pub const COUPON_CLAIMED: &str = "coupon.claimed";

/// The `coupon.claimed` event of claim `r`. Its id derives from the coupon id, so a replayed
/// claim cannot publish twice; its time is the claim's and its trace the claim request's, so
/// the row is the same whenever (and by whichever task) it is written.
pub fn claimed_event(r: &ClaimRecord) -> OutboxEvent {
    let c = &r.coupon;
    OutboxEvent {
        id: format!("{COUPON_CLAIMED}:{}", c.id),
        kind: COUPON_CLAIMED.to_owned(),
        aggregate_id: c.id.get(),
        payload: claimed_event_payload(c),
        created_at_ms: to_ms(c.claimed_at),
        traceparent: r.traceparent.clone(),
    }
}

/// The `traceparent` an event written now should carry: the current request's or job
/// step's, when it is recorded (see [`crate::trace::TraceContext::recorded`]).
pub fn current_traceparent() -> Option<String> {
    crate::trace::TraceContext::current()
        .filter(crate::trace::TraceContext::recorded)
        .map(|c| c.traceparent())
}

/// The event kind written when a distribution reaches a final state.
pub const DISTRIBUTION_COMPLETED: &str = "distribution.completed";

/// The summary a finished task reports (outbox payload and `notify_url` body).
pub fn distribution_summary(t: &DistributionTask) -> serde_json::Value {
    serde_json::json!({
        "event": DISTRIBUTION_COMPLETED,
        "distribution_id": t.id.to_string(),
        "template_id": t.template_id.to_string(),
        "shop_id": t.shop_id.to_string(),
        "name": t.name,
        "status": t.status.as_str(),
        "total_rows": t.total_rows,
        "processed_rows": t.processed_rows,
        "succeeded": t.succeeded,
        "failed": t.failed,
        "failure_reason": t.failure_reason,
        "finished_at": t.finished_at.map(|x| x.to_string()),
    })
}

/// The outbox event recording that `t` reached a final state. Its id is derived from the task,
/// so a finish that is retried cannot record it twice.
pub fn distribution_completed_event(t: &DistributionTask) -> OutboxEvent {
    OutboxEvent {
        id: format!("{DISTRIBUTION_COMPLETED}:{}", t.id),
        kind: DISTRIBUTION_COMPLETED.to_owned(),
        aggregate_id: t.id.get(),
        payload: distribution_summary(t).to_string(),
        created_at_ms: t
            .finished_at
            .map(to_ms)
            .unwrap_or(t.created_at.as_millisecond()),
        traceparent: current_traceparent(),
    }
}

/// Kind of the event a template's creation writes to the outbox.
pub const TEMPLATE_CREATED: &str = "template.created";
/// Kind of the event a template's termination writes to the outbox.
pub const TEMPLATE_TERMINATED: &str = "template.terminated";

/// The `template.created` event of `t`: the template as the API shows it. Its id derives from
/// the template id, so a replayed creation cannot record it twice.
pub fn template_created_event(t: &Template) -> OutboxEvent {
    template_event(TEMPLATE_CREATED, t, t.created_at)
}

/// The event a change from `before` to `after` records, if any: `template.terminated` when
/// the change terminated the template (other changes, stock and the like, record none).
pub fn template_change_event(before: &Template, after: &Template) -> Option<OutboxEvent> {
    (after.status == TemplateStatus::Terminated && before.status != TemplateStatus::Terminated)
        .then(|| template_event(TEMPLATE_TERMINATED, after, after.updated_at))
}

fn template_event(kind: &str, t: &Template, at: jiff::Timestamp) -> OutboxEvent {
    OutboxEvent {
        id: format!("{kind}:{}", t.id),
        kind: kind.to_owned(),
        aggregate_id: t.id.get(),
        payload: serde_json::to_string(t).unwrap_or_default(),
        created_at_ms: to_ms(at),
        traceparent: current_traceparent(),
    }
}
