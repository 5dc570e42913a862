//! WeChat's errcodes, and how they map to [`WeChatError`].

use miniauth_application::ports::WeChatError;

/// System busy: the call was not processed, retry.
pub const BUSY: i64 = -1;
/// Invalid credential: the access token is invalid or not the latest.
pub const INVALID_ACCESS_TOKEN: i64 = 40001;
/// Invalid grant_type (also used for a wrong parameter shape).
pub const INVALID_GRANT_TYPE: i64 = 40002;
/// Invalid openid.
pub const INVALID_OPENID: i64 = 40003;
/// Invalid appid.
pub const INVALID_APPID: i64 = 40013;
/// Invalid access token (another spelling of 40001).
pub const INVALID_ACCESS_TOKEN_2: i64 = 40014;
/// Invalid code (unknown or expired).
pub const INVALID_CODE: i64 = 40029;
/// Invalid app secret.
pub const INVALID_SECRET: i64 = 40125;
/// Code already used.
pub const CODE_USED: i64 = 40163;
/// This server's IP is not whitelisted.
pub const IP_NOT_WHITELISTED: i64 = 40164;
/// High-risk user blocked.
pub const BLOCKED_USER: i64 = 40226;
/// access_token missing.
pub const ACCESS_TOKEN_MISSING: i64 = 41001;
/// appid missing.
pub const APPID_MISSING: i64 = 41002;
/// secret missing.
pub const SECRET_MISSING: i64 = 41004;
/// code missing.
pub const CODE_MISSING: i64 = 41008;
/// Access token expired.
pub const ACCESS_TOKEN_EXPIRED: i64 = 42001;
/// OAuth code expired (`/sns/oauth2/access_token`).
pub const OAUTH_CODE_EXPIRED: i64 = 42003;
/// The OAuth scope does not allow this API (`/sns/userinfo` with `snsapi_base`).
pub const API_UNAUTHORIZED: i64 = 48001;
/// Daily quota used up.
pub const QUOTA_EXHAUSTED: i64 = 45009;
/// Minute quota reached (or calls too frequent).
pub const RATE_LIMITED: i64 = 45011;
/// checksession / resetusersessionkey: the signature does not match the session key.
pub const INVALID_SIGNATURE: i64 = 87009;

/// Whether `code` says the access token must be fetched again.
pub fn is_token_error(code: i64) -> bool {
    matches!(
        code,
        INVALID_ACCESS_TOKEN | INVALID_ACCESS_TOKEN_2 | ACCESS_TOKEN_EXPIRED
    )
}

/// The longest errmsg kept in [`WeChatError::Unknown`].
const MAX_MESSAGE: usize = 200;

/// Maps a non-zero errcode to the typed error. `-1` maps to `Unavailable` with
/// `retry_after_secs`: it is only reached once the retries are spent.
pub fn to_error(code: i64, message: &str, retry_after_secs: u64) -> WeChatError {
    match code {
        BUSY => WeChatError::Unavailable { retry_after_secs },
        // A missing or expired OAuth code is an invalid one to the client.
        INVALID_CODE | CODE_MISSING | OAUTH_CODE_EXPIRED => WeChatError::InvalidCode,
        CODE_USED => WeChatError::CodeUsed,
        RATE_LIMITED => WeChatError::RateLimited,
        BLOCKED_USER => WeChatError::BlockedUser,
        INVALID_APPID | INVALID_SECRET | INVALID_GRANT_TYPE => WeChatError::BadAppCredentials,
        IP_NOT_WHITELISTED => WeChatError::IpNotWhitelisted,
        QUOTA_EXHAUSTED => WeChatError::QuotaExhausted,
        _ => WeChatError::Unknown {
            code,
            message: message.chars().take(MAX_MESSAGE).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_errcode_has_its_type() {
        let cases = [
            (
                -1,
                WeChatError::Unavailable {
                    retry_after_secs: 7,
                },
            ),
            (40029, WeChatError::InvalidCode),
            (40163, WeChatError::CodeUsed),
            (45011, WeChatError::RateLimited),
            (40226, WeChatError::BlockedUser),
            (40013, WeChatError::BadAppCredentials),
            (40125, WeChatError::BadAppCredentials),
            (40002, WeChatError::BadAppCredentials),
            (40164, WeChatError::IpNotWhitelisted),
            (45009, WeChatError::QuotaExhausted),
        ];
        for (code, expected) in cases {
            assert_eq!(to_error(code, "msg", 7), expected, "errcode {code}");
        }
        assert_eq!(
            to_error(87009, "invalid signature", 7),
            WeChatError::Unknown {
                code: 87009,
                message: "invalid signature".into()
            }
        );
    }

    #[test]
    fn token_errors_are_recognised() {
        assert!(is_token_error(40001));
        assert!(is_token_error(40014));
        assert!(is_token_error(42001));
        assert!(!is_token_error(40029));
    }

    #[test]
    fn long_messages_are_cut() {
        let WeChatError::Unknown { message, .. } = to_error(99999, &"x".repeat(1000), 1) else {
            panic!("expected Unknown");
        };
        assert_eq!(message.len(), 200);
    }
}
