//! Reminder endpoints: "remind me before the sale starts". Users manage their own
//! reminders; the scheduler in `stampede-workers` delivers them.

use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{Caller, Fields, JsonObject, UserOnly};
use crate::responses::{ClaimErrors, JsonBodyErrors, NotFound};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use stampede_core::reminders::ReminderView;
use stampede_domain::ids::TemplateId;
use stampede_domain::reminder::{Channel, Reminder, slot_of};
use stampede_domain::{ErrorCode, ValidationErrors};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

#[derive(ToSchema)]
// The handler refuses fields it does not know: published as `additionalProperties: false`.
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documents the contract; the handler reads fields with `Fields`
pub struct ReminderBody {
    /// `app`, `email` or `webhook` (the channels this deployment delivers).
    channel: Channel,
    /// 5, 10, 15, …, 60.
    #[schema(minimum = 5, maximum = 60, multiple_of = 5)]
    minutes_before: i64,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query; the handler reads it by hand to report every bad parameter
pub struct ReminderParams {
    /// `app`, `email` or `webhook`.
    channel: Channel,
    /// 5, 10, 15, …, 60.
    #[param(minimum = 5, maximum = 60, multiple_of = 5)]
    minutes_before: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ReminderList {
    /// Reminders of sales not started yet, soonest due first.
    pub items: Vec<ReminderView>,
}

fn template_id(raw: &str) -> ApiResult<TemplateId> {
    TemplateId::parse(raw).ok_or_else(ApiError::not_found)
}

/// Set a reminder: due at `claim_start − minutes_before`. Setting one that exists is a no-op
/// answered the same way.
#[utoipa::path(put, path = "/api/v1/templates/{id}/reminders", tag = "engine",
    params(("id" = String, Path, description = "template id")),
    request_body = ReminderBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = ReminderView),
        ClaimErrors, NotFound, JsonBodyErrors,
        (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "TEMPLATE_TERMINATED, CLAIM_ENDED, CLAIM_STARTED (the sale has begun) or REMINDER_TOO_LATE (it would be due in the past)"),
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: channel or minutes_before missing, wrong, or a channel this deployment does not deliver"),
    ))]
pub async fn set_reminder(
    State(state): State<AppState>,
    caller: Caller<UserOnly>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<ReminderView>> {
    let id = template_id(&id)?;
    let mut f = Fields::new(body);
    let channel = f.choice("channel", Channel::NAMES, Channel::parse);
    let minutes = f.int("minutes_before");
    let mut errs = f.finish();
    required(&mut errs, channel.is_some(), minutes.is_some());
    let r = state.reminders.reminder_of(channel, minutes, errs)?;
    Ok(Json(state.reminders.set(&caller.principal, id, r).await?))
}

/// Missing fields are reported unless the field already has an error.
fn required(errs: &mut ValidationErrors, has_channel: bool, has_minutes: bool) {
    for (name, present) in [("channel", has_channel), ("minutes_before", has_minutes)] {
        if !present && !errs.as_slice().iter().any(|e| e.field == name) {
            errs.add(name, "is required");
        }
    }
}

/// Delete a reminder (404 when it is not set). Deleted before it is due, it is never sent.
#[utoipa::path(delete, path = "/api/v1/templates/{id}/reminders", tag = "engine",
    params(("id" = String, Path, description = "template id"), ReminderParams),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "deleted"),
        ClaimErrors,
        (status = 404, body = Problem, content_type = PROBLEM_JSON, description = "NOT_FOUND: no such template or no such reminder"),
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: bad channel or minutes_before"),
    ))]
pub async fn delete_reminder(
    State(state): State<AppState>,
    caller: Caller<UserOnly>,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let id = template_id(&id)?;
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    let mut errs = ValidationErrors::new();
    let channel = match q.get("channel") {
        None => None,
        Some(c) => {
            let parsed = Channel::parse(c);
            if parsed.is_none() {
                errs.add(
                    "channel",
                    format!("must be one of: {}", Channel::NAMES.join(", ")),
                );
            }
            parsed
        }
    };
    let minutes = match q.get("minutes_before") {
        None => None,
        Some(m) => match m.parse::<i64>() {
            Ok(n) if slot_of(n).is_some() => Some(n),
            _ => {
                errs.add("minutes_before", "must be one of 5, 10, 15, …, 60");
                None
            }
        },
    };
    required(&mut errs, channel.is_some(), minutes.is_some());
    errs.finish(()).map_err(ApiError::validation)?;
    let r = match (
        channel,
        minutes.and_then(|m| channel.and_then(|c| Reminder::new(c, m))),
    ) {
        (Some(_), Some(r)) => r,
        _ => return Err(ApiError::not_found()),
    };
    state.reminders.delete(&caller.principal, id, r).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's reminders for sales that have not started (across shops: one query on the
/// user's shard). Reminders of terminated templates are not listed: they are cancelled.
#[utoipa::path(get, path = "/api/v1/me/reminders", tag = "engine",
    security(("bearer" = [])),
    responses(
        (status = 200, body = ReminderList),
        ClaimErrors,
    ))]
pub async fn my_reminders(
    State(state): State<AppState>,
    caller: Caller<UserOnly>,
) -> ApiResult<Json<ReminderList>> {
    Ok(Json(ReminderList {
        items: state.reminders.list(&caller.principal).await?,
    }))
}
