//! The stable, machine-readable error codes of the API contract. Clients branch on
//! these strings, so a code is never renamed; new ones may be added.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ErrorCode {
    /// 400: the body is not JSON at all.
    MalformedRequest,
    ValidationFailed,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    SoldOut,
    LimitReached,
    ClaimNotStarted,
    ClaimEnded,
    TemplateTerminated,
    CouponNotUsable,
    /// 409: a reminder for a sale that has already started.
    ClaimStarted,
    /// 409: the reminder would be due in the past (a shorter lead time may still fit).
    ReminderTooLate,
    IdempotencyKeyReused,
    RateLimited,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unavailable,
    /// 503: a claim's answer was lost on the way (the hot store may or may not have applied
    /// it). Retrying with the same `Idempotency-Key` is safe and gives the real answer.
    OutcomeUnknown,
    /// 503: the node sheds load (too many requests in flight); retry after `Retry-After`.
    Overloaded,
    /// 400: this deployment requires an `Idempotency-Key` on the request.
    IdempotencyKeyRequired,
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is always sent with.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            MalformedRequest | IdempotencyKeyRequired => 400,
            ValidationFailed | IdempotencyKeyReused => 422,
            Unauthenticated => 401,
            Forbidden => 403,
            NotFound => 404,
            MethodNotAllowed => 405,
            Conflict | SoldOut | LimitReached | ClaimNotStarted | ClaimEnded
            | TemplateTerminated | CouponNotUsable | ClaimStarted | ReminderTooLate => 409,
            RateLimited => 429,
            PayloadTooLarge => 413,
            UnsupportedMediaType => 415,
            Unavailable | OutcomeUnknown | Overloaded => 503,
            Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MalformedRequest => "MALFORMED_REQUEST",
            ValidationFailed => "VALIDATION_FAILED",
            Unauthenticated => "UNAUTHENTICATED",
            Forbidden => "FORBIDDEN",
            NotFound => "NOT_FOUND",
            MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Conflict => "CONFLICT",
            SoldOut => "SOLD_OUT",
            LimitReached => "LIMIT_REACHED",
            ClaimNotStarted => "CLAIM_NOT_STARTED",
            ClaimEnded => "CLAIM_ENDED",
            TemplateTerminated => "TEMPLATE_TERMINATED",
            CouponNotUsable => "COUPON_NOT_USABLE",
            ClaimStarted => "CLAIM_STARTED",
            ReminderTooLate => "REMINDER_TOO_LATE",
            IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            RateLimited => "RATE_LIMITED",
            PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Unavailable => "UNAVAILABLE",
            OutcomeUnknown => "OUTCOME_UNKNOWN",
            Overloaded => "OVERLOADED",
            IdempotencyKeyRequired => "IDEMPOTENCY_KEY_REQUIRED",
            Internal => "INTERNAL",
        }
    }

    /// A short human title for the problem+json `title` field.
    pub fn title(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MalformedRequest => "Malformed request",
            ValidationFailed => "Validation failed",
            Unauthenticated => "Authentication required",
            Forbidden => "Forbidden",
            NotFound => "Not found",
            MethodNotAllowed => "Method not allowed",
            Conflict => "Conflict",
            SoldOut => "Sold out",
            LimitReached => "Per-user limit reached",
            ClaimNotStarted => "Claim window not started",
            ClaimEnded => "Claim window ended",
            TemplateTerminated => "Template terminated",
            CouponNotUsable => "Coupon not usable",
            ClaimStarted => "Claim window already started",
            ReminderTooLate => "Reminder would be due in the past",
            IdempotencyKeyReused => "Idempotency key reused",
            RateLimited => "Too many requests",
            PayloadTooLarge => "Payload too large",
            UnsupportedMediaType => "Unsupported media type",
            Unavailable => "Service unavailable",
            OutcomeUnknown => "Outcome unknown: retry with the same Idempotency-Key",
            Overloaded => "Overloaded",
            IdempotencyKeyRequired => "Idempotency-Key required",
            Internal => "Internal error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_name_matches_as_str() {
        for code in [
            ErrorCode::ValidationFailed,
            ErrorCode::IdempotencyKeyReused,
            ErrorCode::SoldOut,
            ErrorCode::OutcomeUnknown,
            ErrorCode::IdempotencyKeyRequired,
        ] {
            let json = serde_json::to_value(code).unwrap_or_default();
            assert_eq!(json.as_str(), Some(code.as_str()));
        }
    }
}
