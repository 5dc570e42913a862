//! The events of a `SocialAccount`: past tense, each with the time it happened,
//! serde-stable names, versioned for upcasting.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::ids::{AccountId, AppId, OpenId, UserId};
use crate::sealed::{SealedDatum, SealedSecret, SealedUnionId};

/// The version of the event types whose shape never changed.
pub const EVENT_VERSION: &str = "1";

/// The version of `SessionObtained` and `ProfileDecrypted` since their unionid is kept
/// as a [`SealedUnionId`] (version "1" kept it in clear; the store's upcaster reads it).
pub const SEALED_UNIONID_VERSION: &str = "2";

/// The version of `SessionObtained` since it names its channel and carries a session
/// key only when the channel has one (version "2" was always a mini program's, with a
/// key; the store's upcaster reads it).
pub const CHANNEL_VERSION: &str = "3";

/// The version of `AccountImported` since it names its channel (version "1" was always
/// a mini program's: only GitEgg's `WECHAT_MINI_APP` rows were imported; the store's
/// upcaster reads it).
pub const IMPORTED_CHANNEL_VERSION: &str = "2";

/// Everything that happened to one WeChat identity in one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SocialAccountEvent {
    /// code2session answered for this identity.
    SessionObtained(SessionObtained),
    /// A profile (nickname, avatar) was accepted.
    ProfileDecrypted(ProfileDecrypted),
    /// A phone number was verified by WeChat.
    PhoneVerified(PhoneVerified),
    /// The identity was bound to a business user.
    UserBound(UserBound),
    /// The identity was unbound from its user.
    Unbound(Unbound),
    /// The account's personal data key was destroyed (crypto-shredding).
    PersonalDataErased(PersonalDataErased),
    /// The identity's unionid is bound to several users in the tenant: it was linked to
    /// none of them.
    LinkDeclined(LinkDeclined),
    /// The identity was carried over from another system (a migration).
    AccountImported(AccountImported),
}

/// A login's result: code2session's (a mini program), or the OAuth code exchange's
/// (`/sns/oauth2/access_token`: an Official Account, a website, a mobile App).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionObtained {
    /// The app the login was for.
    pub appid: AppId,
    /// The WeChat user within the app.
    pub openid: OpenId,
    /// The Open Platform id, when WeChat sent one: hashed and sealed.
    pub unionid: Option<SealedUnionId>,
    /// The kind of app the login came through.
    pub channel: Channel,
    /// The session key, sealed with the server key: a mini program's login has one,
    /// the other channels' have none (and their OAuth access token is not kept).
    pub session_key: Option<SealedSecret>,
    /// 1 for the first login of this identity, then +1 for each.
    pub session_seq: u64,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// How a profile reached miniauth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileSource {
    /// Legacy `getUserInfo`: rawData + signature + encryptedData + iv.
    EncryptedPayload,
    /// Current `chooseAvatar` + nickname input, sent as plain fields by the client.
    ClientSupplied,
    /// WeChat's `/sns/userinfo`, asked at the login of an Official Account (scope
    /// `snsapi_userinfo`), a website or a mobile App.
    SnsUserinfo,
}

/// A profile was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileDecrypted {
    /// The nickname, sealed with the account's data key.
    pub nickname: SealedDatum,
    /// The avatar URL, sealed with the account's data key.
    pub avatar_url: SealedDatum,
    /// A unionid the payload revealed, if any: hashed and sealed.
    pub unionid: Option<SealedUnionId>,
    /// How it arrived.
    pub via: ProfileSource,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// How a phone number was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhoneSource {
    /// The current flow: a one-time phone code exchanged with getuserphonenumber.
    PhoneCode,
    /// The legacy flow: encryptedData + iv under the session key.
    EncryptedPayload,
}

/// A phone number was verified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhoneVerified {
    /// The national number, sealed with the account's data key.
    pub phone: SealedDatum,
    /// The country calling code (not personal on its own).
    pub country_code: String,
    /// How it was verified.
    pub via: PhoneSource,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// How a binding was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindMethod {
    /// The verified phone matched an existing user.
    PhoneMatch,
    /// A new user was registered from the verified phone.
    AutoRegistration,
    /// The user logged in with account and password.
    PasswordLogin,
    /// The user was already logged in (bearer token) and bound the ticket.
    CurrentUser,
    /// The identity's unionid is bound, through another app of the same tenant, to
    /// this user (`linked_from` names that app's account).
    UnionidMatch,
    /// The binding was carried over from another system (`imported_from` names the row).
    Imported,
}

/// The identity was bound to a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserBound {
    /// The business user.
    pub user_id: UserId,
    /// How.
    pub via: BindMethod,
    /// For `unionid_match`: the account (another app, same tenant, same unionid) whose
    /// binding this one follows. Absent otherwise (and in events written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_from: Option<AccountId>,
    /// For `imported`: the row of the other system the binding was read from. Absent
    /// otherwise (and in events written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<Provenance>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// Where an imported fact was read: a row of another system's database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The system (`gitegg`).
    pub system: String,
    /// Its table (`t_just_auth_social`, `t_just_auth_social_user`).
    pub table: String,
    /// The row's primary key there.
    pub row_id: i64,
}

/// The identity was carried over from another system, with what that system knew of
/// it. It holds no session: the next login obtains one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountImported {
    /// The app.
    pub appid: AppId,
    /// The WeChat user within the app.
    pub openid: OpenId,
    /// The Open Platform id, if the other system had one: hashed and sealed.
    pub unionid: Option<SealedUnionId>,
    /// The kind of app the identity belongs to (its first login will come through it).
    pub channel: Channel,
    /// The nickname the other system had, sealed with the account's data key.
    pub nickname: Option<SealedDatum>,
    /// The avatar URL the other system had, sealed with the account's data key.
    pub avatar_url: Option<SealedDatum>,
    /// The row it was read from.
    pub source: Provenance,
    /// When the import ran (the transition periods of the migration count from it).
    pub imported_at: DateTime<Utc>,
    /// When the other system recorded the identity (its row's creation time).
    pub occurred_at: DateTime<Utc>,
}

/// Why a binding ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnbindReason {
    /// The user asked for it.
    UserRequest,
    /// An administrator did it.
    Administrator,
    /// The person's data was erased.
    Erasure,
}

/// The identity was unbound from its user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unbound {
    /// The user it was bound to.
    pub user_id: UserId,
    /// Why.
    pub reason: UnbindReason,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// A login's unionid is bound, in other apps of the tenant, to several users: linking
/// it to one of them would be a guess, so it stays unbound and says why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkDeclined {
    /// The users the unionid's bindings name.
    pub users: Vec<UserId>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// The account's data key was destroyed: its sealed personal data reads as erased.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalDataErased {
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

impl SocialAccountEvent {
    /// When the event happened.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::SessionObtained(e) => e.occurred_at,
            Self::ProfileDecrypted(e) => e.occurred_at,
            Self::PhoneVerified(e) => e.occurred_at,
            Self::UserBound(e) => e.occurred_at,
            Self::Unbound(e) => e.occurred_at,
            Self::PersonalDataErased(e) => e.occurred_at,
            Self::LinkDeclined(e) => e.occurred_at,
            Self::AccountImported(e) => e.occurred_at,
        }
    }

    /// The stable name of the event type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::SessionObtained(_) => "SessionObtained",
            Self::ProfileDecrypted(_) => "ProfileDecrypted",
            Self::PhoneVerified(_) => "PhoneVerified",
            Self::UserBound(_) => "UserBound",
            Self::Unbound(_) => "Unbound",
            Self::PersonalDataErased(_) => "PersonalDataErased",
            Self::LinkDeclined(_) => "LinkDeclined",
            Self::AccountImported(_) => "AccountImported",
        }
    }
}

// The snake_case names the enums serialise to, for reports that print them.
macro_rules! names {
    ($($ty:ident { $($variant:ident => $name:literal),* $(,)? })*) => {$(
        impl $ty {
            /// The name it is stored and reported under.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    )*};
}

names! {
    ProfileSource {
        EncryptedPayload => "encrypted_payload",
        ClientSupplied => "client_supplied",
        SnsUserinfo => "sns_userinfo",
    }
    PhoneSource { PhoneCode => "phone_code", EncryptedPayload => "encrypted_payload" }
    BindMethod {
        PhoneMatch => "phone_match",
        AutoRegistration => "auto_registration",
        PasswordLogin => "password_login",
        CurrentUser => "current_user",
        UnionidMatch => "unionid_match",
        Imported => "imported",
    }
    UnbindReason {
        UserRequest => "user_request",
        Administrator => "administrator",
        Erasure => "erasure",
    }
}

/// The version events of `event_type` are written with today.
pub fn current_version(event_type: &str) -> &'static str {
    match event_type {
        "SessionObtained" => CHANNEL_VERSION,
        "ProfileDecrypted" => SEALED_UNIONID_VERSION,
        "AccountImported" => IMPORTED_CHANNEL_VERSION,
        _ => EVENT_VERSION,
    }
}

impl DomainEvent for SocialAccountEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }

    fn event_version(&self) -> String {
        current_version(self.type_name()).to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_names_are_stable() {
        let event = SocialAccountEvent::UserBound(UserBound {
            user_id: UserId::new(42).unwrap(),
            via: BindMethod::PhoneMatch,
            linked_from: None,
            imported_from: None,
            occurred_at: DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap(),
        });
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"UserBound": {"user_id": 42, "via": "phone_match", "occurred_at": "2023-11-14T22:13:20Z"}})
        );
        assert_eq!(event.event_type(), "UserBound");
        assert_eq!(event.event_version(), "1");
        let back: SocialAccountEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn reported_names_are_the_stored_names() {
        fn stored(value: impl Serialize) -> String {
            serde_json::to_value(value)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        }
        for via in [
            ProfileSource::EncryptedPayload,
            ProfileSource::ClientSupplied,
            ProfileSource::SnsUserinfo,
        ] {
            assert_eq!(via.as_str(), stored(via));
        }
        for via in [PhoneSource::PhoneCode, PhoneSource::EncryptedPayload] {
            assert_eq!(via.as_str(), stored(via));
        }
        for via in [
            BindMethod::PhoneMatch,
            BindMethod::AutoRegistration,
            BindMethod::PasswordLogin,
            BindMethod::CurrentUser,
            BindMethod::UnionidMatch,
            BindMethod::Imported,
        ] {
            assert_eq!(via.as_str(), stored(via));
        }
        for reason in [
            UnbindReason::UserRequest,
            UnbindReason::Administrator,
            UnbindReason::Erasure,
        ] {
            assert_eq!(reason.as_str(), stored(reason));
        }
    }
}
