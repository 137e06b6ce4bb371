//! Reminder use cases (`PUT`/`DELETE /templates/{id}/reminders`,
//! `GET /me/reminders`): who may set what, the settable rules of the domain
//! (`stampede_domain::reminder::check_settable`) and the store calls. Delivery is the
//! workers' `ReminderScheduler`.

use crate::AppError;
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::reminder_ports::ReminderStore;
use jiff::Timestamp;
use serde::Serialize;
use stampede_domain::auth::Principal;
use stampede_domain::ids::TemplateId;
use stampede_domain::reminder::{Channel, Reminder, ReminderRefusal, check_settable, slot_of};
use stampede_domain::template::{Template, TemplateStatus};
use stampede_domain::{ErrorCode, ValidationErrors};
use std::sync::Arc;

/// A reminder as its user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReminderView {
    pub template_id: TemplateId,
    /// The template's name.
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub claim_start: Timestamp,
    pub channel: Channel,
    /// 5, 10, …, 60.
    pub minutes_before: u32,
    /// `claim_start − minutes_before`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub remind_at: Timestamp,
    /// Already sent.
    pub delivered: bool,
}

pub struct Reminders {
    store: Arc<dyn ReminderStore>,
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    /// Channels this deployment delivers (a reminder on another would never arrive).
    channels: Vec<Channel>,
}

fn refusal(r: ReminderRefusal) -> AppError {
    let code = match r {
        ReminderRefusal::Terminated => ErrorCode::TemplateTerminated,
        ReminderRefusal::Ended => ErrorCode::ClaimEnded,
        ReminderRefusal::AlreadyStarted => ErrorCode::ClaimStarted,
        ReminderRefusal::TooLate => ErrorCode::ReminderTooLate,
    };
    AppError::Conflict {
        code,
        detail: r.to_string(),
    }
}

fn view(t: &Template, r: Reminder, delivered: bool) -> ReminderView {
    ReminderView {
        template_id: t.id,
        name: t.name.clone(),
        claim_start: t.claim_start,
        channel: r.channel,
        minutes_before: r.minutes_before,
        remind_at: r.remind_at(t.claim_start),
        delivered,
    }
}

impl Reminders {
    pub fn new(
        store: Arc<dyn ReminderStore>,
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
        channels: Vec<Channel>,
    ) -> Self {
        Self {
            store,
            catalog,
            clock,
            channels,
        }
    }

    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    /// The reminder of a request, or every problem with it at once.
    pub fn reminder_of(
        &self,
        channel: Option<Channel>,
        minutes_before: Option<i64>,
        mut errs: ValidationErrors,
    ) -> Result<Reminder, AppError> {
        if let Some(c) = channel
            && !self.channels.contains(&c)
        {
            errs.add(
                "channel",
                format!(
                    "{} reminders are not delivered by this deployment",
                    c.as_str()
                ),
            );
        }
        let r = match minutes_before {
            Some(m) => {
                let r = channel.and_then(|c| Reminder::new(c, m));
                if slot_of(m).is_none() {
                    errs.add("minutes_before", "must be one of 5, 10, 15, …, 60");
                }
                r
            }
            None => None,
        };
        errs.finish(())?;
        // Reached only with both present and valid: the readers report absence.
        r.ok_or_else(|| {
            AppError::Validation(ValidationErrors::single(
                "minutes_before",
                "must be one of 5, 10, 15, …, 60",
            ))
        })
    }

    async fn template(&self, id: TemplateId) -> Result<Arc<Template>, AppError> {
        self.catalog
            .get(id)
            .await?
            .ok_or_else(|| AppError::NotFound("no such template".into()))
    }

    /// Sets a reminder; setting one that exists changes nothing.
    pub async fn set(
        &self,
        who: &Principal,
        id: TemplateId,
        r: Reminder,
    ) -> Result<ReminderView, AppError> {
        let user = crate::claims::user_of(who)?;
        let t = self.template(id).await?;
        let now = self.clock.now();
        check_settable(t.effective_status(now), t.claim_start, r, now).map_err(refusal)?;
        self.store.set_reminder(user, id, t.claim_start, r).await?;
        Ok(view(&t, r, false))
    }

    /// Deletes a reminder; `NotFound` when it is not set.
    pub async fn delete(
        &self,
        who: &Principal,
        id: TemplateId,
        r: Reminder,
    ) -> Result<(), AppError> {
        let user = crate::claims::user_of(who)?;
        if self.store.delete_reminder(user, id, r).await? {
            Ok(())
        } else {
            Err(AppError::NotFound(format!(
                "no {} reminder {} minutes before for this template",
                r.channel.as_str(),
                r.minutes_before
            )))
        }
    }

    /// The caller's reminders for sales that have not started, soonest due first. Reminders
    /// of terminated (or deleted) templates are left out: they will never be delivered.
    pub async fn list(&self, who: &Principal) -> Result<Vec<ReminderView>, AppError> {
        let user = crate::claims::user_of(who)?;
        let now = self.clock.now();
        let rows: Vec<_> = self
            .store
            .user_reminders(user)
            .await?
            .into_iter()
            .filter(|row| row.claim_start > now)
            .collect();
        let ids: Vec<TemplateId> = rows.iter().map(|r| r.template_id).collect();
        let templates = self.catalog.get_many(&ids).await?;
        let mut out = Vec::new();
        for row in rows {
            let Some(t) = templates.get(&row.template_id) else {
                continue;
            };
            if t.effective_status(now) == TemplateStatus::Terminated {
                continue;
            }
            for r in row.bits.iter() {
                out.push(view(t, r, row.sent.contains(r)));
            }
        }
        out.sort_by(|a, b| {
            (a.remind_at, a.template_id, a.channel).cmp(&(b.remind_at, b.template_id, b.channel))
        });
        Ok(out)
    }
}
