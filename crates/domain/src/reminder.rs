//! Reminders: "remind me before the sale starts". A user asks for a
//! channel (`app`, `email`, `webhook`) and a lead time (`minutes_before` ∈ {5, 10, …, 60});
//! the reminder is due at `claim_start − minutes_before`.
//!
//! Storage is one row per user and template holding a [`ReminderSet`]: one bit per channel ×
//! 5-minute slot (3 × 12 = 36 bits of a 64-bit integer), so setting or clearing a reminder is
//! an atomic `bits | b` / `bits & !b` and concurrent updates of the same row never lose a bit.
//! A second set, `sent`, records what was delivered; what is still to deliver is
//! `bits & !sent`, and the row's next due time is the earliest of those.

use crate::ids::TemplateId;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

/// The lead times offered: 5 to 60 minutes in steps of 5.
pub const SLOTS: u32 = 12;
pub const MINUTES_STEP: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Channel {
    App,
    Email,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::App, Channel::Email, Channel::Webhook];
    pub const NAMES: &'static [&'static str] = &["app", "email", "webhook"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "app" => Some(Self::App),
            "email" => Some(Self::Email),
            "webhook" => Some(Self::Webhook),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Email => "email",
            Self::Webhook => "webhook",
        }
    }

    fn index(self) -> u32 {
        match self {
            Self::App => 0,
            Self::Email => 1,
            Self::Webhook => 2,
        }
    }
}

/// A lead time that is one of the offered slots, or `None`.
pub fn slot_of(minutes_before: i64) -> Option<u32> {
    let m = u32::try_from(minutes_before).ok()?;
    ((MINUTES_STEP..=MINUTES_STEP * SLOTS).contains(&m) && m % MINUTES_STEP == 0)
        .then(|| m / MINUTES_STEP - 1)
}

/// One reminder of a user for a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reminder {
    pub channel: Channel,
    /// 5, 10, …, 60.
    pub minutes_before: u32,
}

impl Reminder {
    /// `None` unless `minutes_before` is an offered slot.
    pub fn new(channel: Channel, minutes_before: i64) -> Option<Self> {
        slot_of(minutes_before).map(|s| Self {
            channel,
            minutes_before: (s + 1) * MINUTES_STEP,
        })
    }

    /// The reminder's bit in a [`ReminderSet`].
    pub fn bit(self) -> u64 {
        let slot = self.minutes_before / MINUTES_STEP - 1;
        1u64 << (self.channel.index() * SLOTS + slot)
    }

    /// When it is due for a sale starting at `claim_start`.
    pub fn remind_at(self, claim_start: Timestamp) -> Timestamp {
        claim_start - SignedDuration::from_mins(i64::from(self.minutes_before))
    }

    /// A stable id for at-least-once delivery: receivers deduplicate on it.
    pub fn dedupe_id(self, user: crate::ids::UserId, template: TemplateId) -> String {
        format!(
            "reminder:{user}:{template}:{}:{}",
            self.channel.as_str(),
            self.minutes_before
        )
    }
}

/// A set of reminders of one user for one template, as stored (36 bits used).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ReminderSet(u64);

/// Every bit a valid reminder can use.
const VALID_BITS: u64 = (1u64 << (3 * SLOTS)) - 1;

impl ReminderSet {
    pub const EMPTY: ReminderSet = ReminderSet(0);

    /// A stored value; bits no reminder uses are dropped (they can only come from a bug).
    pub fn from_bits(bits: u64) -> Self {
        Self(bits & VALID_BITS)
    }

    pub fn bits(self) -> u64 {
        self.0
    }

    pub fn with(self, r: Reminder) -> Self {
        Self(self.0 | r.bit())
    }

    pub fn without(self, r: Reminder) -> Self {
        Self(self.0 & !r.bit())
    }

    pub fn contains(self, r: Reminder) -> bool {
        self.0 & r.bit() != 0
    }

    /// Reminders in `self` and not in `other`.
    pub fn minus(self, other: ReminderSet) -> Self {
        Self(self.0 & !other.0)
    }

    pub fn union(self, other: ReminderSet) -> Self {
        Self(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> u32 {
        self.0.count_ones()
    }

    /// The reminders, by channel then lead time.
    pub fn iter(self) -> impl Iterator<Item = Reminder> {
        Channel::ALL.into_iter().flat_map(move |channel| {
            (0..SLOTS).filter_map(move |slot| {
                let r = Reminder {
                    channel,
                    minutes_before: (slot + 1) * MINUTES_STEP,
                };
                self.contains(r).then_some(r)
            })
        })
    }

    /// The reminders due at `now` for a sale starting at `claim_start`.
    pub fn due(self, claim_start: Timestamp, now: Timestamp) -> ReminderSet {
        self.iter()
            .filter(|r| r.remind_at(claim_start) <= now)
            .fold(ReminderSet::EMPTY, ReminderSet::with)
    }

    /// When the earliest of these reminders is due (`None` for an empty set): the one with
    /// the longest lead time.
    pub fn next_due(self, claim_start: Timestamp) -> Option<Timestamp> {
        self.iter().map(|r| r.remind_at(claim_start)).min()
    }
}

/// Why a reminder cannot be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReminderRefusal {
    #[error("the template was terminated")]
    Terminated,
    #[error("the template's claim window has closed")]
    Ended,
    #[error("the sale has already started: there is nothing left to remind of")]
    AlreadyStarted,
    #[error("that reminder would be due in the past: choose a shorter lead time")]
    TooLate,
}

/// May a reminder with `r` be set at `now` for a template in `status` starting at
/// `claim_start`? Its due time must still be ahead.
pub fn check_settable(
    status: crate::template::TemplateStatus,
    claim_start: Timestamp,
    r: Reminder,
    now: Timestamp,
) -> Result<(), ReminderRefusal> {
    use crate::template::TemplateStatus;
    match status {
        TemplateStatus::Terminated => Err(ReminderRefusal::Terminated),
        TemplateStatus::Ended => Err(ReminderRefusal::Ended),
        TemplateStatus::Active if now >= claim_start => Err(ReminderRefusal::AlreadyStarted),
        TemplateStatus::Active if r.remind_at(claim_start) <= now => Err(ReminderRefusal::TooLate),
        TemplateStatus::Active => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;

    fn reminder() -> impl Strategy<Value = Reminder> {
        (0usize..3, 1i64..=12).prop_map(|(c, s)| Reminder::new(Channel::ALL[c], s * 5).unwrap())
    }

    #[test]
    fn slots_are_5_to_60_in_steps_of_5() {
        let ok: Vec<i64> = (-10..=70).filter(|m| slot_of(*m).is_some()).collect();
        assert_eq!(ok, (1..=12).map(|s| s * 5).collect::<Vec<_>>());
        assert_eq!(slot_of(5), Some(0));
        assert_eq!(slot_of(60), Some(11));
        assert_eq!(slot_of(i64::MAX), None);
    }

    #[test]
    fn thirty_six_distinct_bits() {
        let mut all = ReminderSet::EMPTY;
        let mut n = 0;
        for c in Channel::ALL {
            for m in (1..=12).map(|s| s * 5) {
                let r = Reminder::new(c, m).unwrap();
                assert!(!all.contains(r));
                all = all.with(r);
                n += 1;
            }
        }
        assert_eq!(n, 36);
        assert_eq!(all.bits(), VALID_BITS);
        assert_eq!(ReminderSet::from_bits(u64::MAX), all);
    }

    #[test]
    fn due_times_and_settability() {
        let start = Timestamp::from_second(1_800_000_000).unwrap();
        let r = Reminder::new(Channel::Email, 15).unwrap();
        assert_eq!(r.remind_at(start), start - SignedDuration::from_mins(15));
        use crate::template::TemplateStatus as S;
        let before = start - SignedDuration::from_mins(20);
        assert_eq!(check_settable(S::Active, start, r, before), Ok(()));
        let inside = start - SignedDuration::from_mins(10);
        assert_eq!(
            check_settable(S::Active, start, r, inside),
            Err(ReminderRefusal::TooLate)
        );
        assert_eq!(
            check_settable(S::Active, start, r, start),
            Err(ReminderRefusal::AlreadyStarted)
        );
        assert_eq!(
            check_settable(S::Terminated, start, r, before),
            Err(ReminderRefusal::Terminated)
        );
        assert_eq!(
            check_settable(S::Ended, start, r, before),
            Err(ReminderRefusal::Ended)
        );
        let set = ReminderSet::EMPTY
            .with(r)
            .with(Reminder::new(Channel::App, 60).unwrap());
        assert_eq!(
            set.next_due(start),
            Some(start - SignedDuration::from_mins(60))
        );
        assert_eq!(
            set.due(start, start - SignedDuration::from_mins(30)).len(),
            1
        );
        assert_eq!(set.due(start, start - SignedDuration::from_mins(15)), set);
        assert_eq!(ReminderSet::EMPTY.next_due(start), None);
        assert_eq!(
            r.dedupe_id(
                crate::ids::UserId::new(7).unwrap(),
                TemplateId::new(9).unwrap()
            ),
            "reminder:7:9:email:15"
        );
    }

    proptest! {
        /// Setting and clearing are bit operations that commute across reminders: applying
        /// the same operations in any order (as concurrent `bits | b` / `bits & !b` updates
        /// do) gives the same set, and no operation disturbs another reminder's bit.
        #[test]
        fn bit_packing_round_trips(adds in proptest::collection::vec(reminder(), 0..40),
                                   removes in proptest::collection::vec(reminder(), 0..10)) {
            let mut forward = ReminderSet::EMPTY;
            for r in &adds { forward = forward.with(*r); }
            let mut backward = ReminderSet::EMPTY;
            for r in adds.iter().rev() { backward = backward.with(*r); }
            prop_assert_eq!(forward, backward);
            for r in &adds { prop_assert!(forward.contains(*r)); }
            let distinct: std::collections::HashSet<Reminder> = adds.iter().copied().collect();
            prop_assert_eq!(forward.len() as usize, distinct.len());
            prop_assert_eq!(forward.iter().collect::<std::collections::HashSet<_>>(), distinct.clone());
            let mut after = forward;
            for r in &removes { after = after.without(*r); }
            for r in &distinct {
                prop_assert_eq!(after.contains(*r), !removes.contains(r));
            }
            prop_assert_eq!(ReminderSet::from_bits(after.bits()), after);
            prop_assert_eq!(after.union(forward.minus(after)), forward);
        }

        /// What is due only grows with time, and everything is due by the sale's start.
        #[test]
        fn due_grows_with_time(adds in proptest::collection::vec(reminder(), 0..12), a in 0i64..120, b in 0i64..120) {
            let start = Timestamp::from_second(1_800_000_000).unwrap();
            let set = adds.iter().fold(ReminderSet::EMPTY, |s, r| s.with(*r));
            let (early, late) = (a.min(b), a.max(b));
            let at = |m: i64| start - SignedDuration::from_mins(120 - m);
            let d1 = set.due(start, at(early));
            let d2 = set.due(start, at(late));
            prop_assert_eq!(d1.minus(d2), ReminderSet::EMPTY);
            prop_assert_eq!(set.due(start, start), set);
            if let Some(next) = set.next_due(start) {
                prop_assert!(!set.due(start, next).is_empty());
                prop_assert!(set.due(start, next - SignedDuration::from_millis(1)).is_empty());
            }
        }
    }
}
