//! The public error codes and kinds: clients match on them, so they are pinned here.

use miniauth_application::ports::{ClaimError, PortError, RefreshError, TicketError, WeChatError};
use miniauth_application::{AppError, ErrorKind};
use miniauth_domain::{AccountError, InvalidValue, PayloadError};

use crate::harness::*;

#[test]
fn error_codes_are_stable() {
    let pinned: Vec<(AppError, &str)> = vec![
        (
            InvalidValue::new("code", "is missing or empty").into(),
            "invalid_field",
        ),
        (AppError::UnknownApp, "unknown_app"),
        (WeChatError::InvalidCode.into(), "code_invalid"),
        (WeChatError::RateLimited.into(), "wechat_rate_limited"),
        (TicketError::Expired.into(), "ticket_expired"),
        (AppError::TicketAppMismatch, "ticket_app_mismatch"),
        (
            AccountError::TicketSessionSuperseded.into(),
            "ticket_session_superseded",
        ),
        // Every failure after decryption is one code: no padding oracle.
        (
            PayloadError::WatermarkAppMismatch.into(),
            "payload_rejected",
        ),
        (PayloadError::SessionKeyMismatch.into(), "payload_rejected"),
        (
            PayloadError::NotJson("expected value".into()).into(),
            "payload_rejected",
        ),
        (PayloadError::SignatureMismatch.into(), "payload_rejected"),
        (PayloadError::OpenIdMismatch.into(), "payload_rejected"),
        (PayloadError::WatermarkExpired.into(), "payload_rejected"),
        (
            PayloadError::NotBase64 { field: "iv" }.into(),
            "payload_not_base64",
        ),
        (AppError::SessionKeySpent, "session_key_spent"),
        (AppError::LegacyPayloadsDisabled, "legacy_payloads_disabled"),
        (AppError::TicketAlreadyUsed, "ticket_already_used"),
        (WeChatError::CodeAlreadyAnswered.into(), "code_already_used"),
        (
            AccountError::AlreadyBoundToOtherUser.into(),
            "already_bound_to_other_user",
        ),
        (AppError::RegistrationClosed, "registration_closed"),
        (AppError::PhoneNotRegistered, "phone_not_registered"),
        (AppError::UserAlreadyBoundInApp, "user_already_bound_in_app"),
        (AppError::NotBound, "not_bound"),
        (AppError::BadCredentials, "invalid_credentials"),
        (AppError::TooManyAttempts(5), "too_many_attempts"),
        (RefreshError::Reused.into(), "refresh_token_reused"),
        (AppError::Contention, "concurrent_update"),
        (AppError::Internal("boom".into()), "internal_error"),
    ];
    for (error, expected) in pinned {
        assert_eq!(code(&error), expected, "{error:?}");
    }
}

#[test]
fn registry_refusals_become_the_public_binding_errors() {
    let taken: AppError = ClaimError::IdentityTaken(user_id(8)).into();
    assert_eq!(code(&taken), "already_bound_to_other_user");
    let has: AppError = ClaimError::UserHasIdentity.into();
    assert_eq!(code(&has), "user_already_bound_in_app");
    let down: AppError = ClaimError::Port(PortError::Unavailable("registry".into())).into();
    assert!(matches!(down, AppError::Unavailable(_)), "{down:?}");
}

#[test]
fn kinds_choose_the_transport_status() {
    assert_eq!(AppError::UnknownApp.kind(), ErrorKind::NotFound);
    assert_eq!(
        AppError::from(WeChatError::RateLimited).kind(),
        ErrorKind::TooManyRequests(60)
    );
    assert_eq!(
        AppError::from(WeChatError::Unavailable {
            retry_after_secs: 9
        })
        .kind(),
        ErrorKind::Unavailable(9)
    );
    assert_eq!(
        AppError::from(TicketError::Missing).kind(),
        ErrorKind::BadRequest
    );
    assert_eq!(
        AppError::from(TicketError::Forged).kind(),
        ErrorKind::Unauthorized
    );
    assert_eq!(AppError::RegistrationClosed.kind(), ErrorKind::Forbidden);
    assert_eq!(AppError::Contention.kind(), ErrorKind::Conflict);
    assert_eq!(
        AppError::from(AccountError::AlreadyBoundToOtherUser).kind(),
        ErrorKind::Conflict
    );
}

#[test]
fn internal_details_never_reach_the_client_message() {
    let error = AppError::Internal("password=hunter2 at db".into());
    assert_eq!(error.to_string(), "internal error");
}
