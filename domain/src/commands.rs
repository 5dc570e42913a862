//! What can be asked of a `SocialAccount`. External facts (WeChat's answers, decrypted
//! payloads, sealed values) are gathered before a command is built: the aggregate
//! only decides.

use chrono::{DateTime, Utc};

use crate::channel::Channel;
use crate::events::{BindMethod, PhoneSource, ProfileSource, Provenance, UnbindReason};
use crate::ids::{AccountId, AppId, OpenId, UserId};
use crate::sealed::{SealedDatum, SealedSecret, SealedUnionId};

/// Which session a request speaks for: the ticket's, and, for an encrypted payload,
/// the session whose key decrypted it (the ticket's or, after a `wx.login` race, the
/// newest one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionProof {
    /// The session the ticket was issued for.
    pub ticket_session: u64,
    /// The session whose key opened the payload, when the request carried one.
    pub payload_session: Option<u64>,
}

impl SessionProof {
    /// A request that carries only a ticket.
    pub fn ticket(ticket_session: u64) -> Self {
        Self {
            ticket_session,
            payload_session: None,
        }
    }

    /// A request whose payload was opened under `payload_session`'s key.
    pub fn payload(ticket_session: u64, payload_session: u64) -> Self {
        Self {
            ticket_session,
            payload_session: Some(payload_session),
        }
    }
}

/// A command to the `SocialAccount` aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum SocialAccountCommand {
    /// Record a code2session result.
    ObtainSession {
        /// The app.
        appid: AppId,
        /// The WeChat user.
        openid: OpenId,
        /// The unionid, when WeChat sent one, hashed and sealed.
        unionid: Option<SealedUnionId>,
        /// The session key, already sealed.
        session_key: SealedSecret,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Record an OAuth code exchange (`/sns/oauth2/access_token`) of an app that is not
    /// a mini program: no session key exists for it.
    ObtainOAuthSession {
        /// The app.
        appid: AppId,
        /// The WeChat user.
        openid: OpenId,
        /// The unionid, when WeChat sent one, hashed and sealed.
        unionid: Option<SealedUnionId>,
        /// The app's kind (any but a mini program).
        channel: Channel,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Record a profile.
    AcceptProfile {
        /// The request's session.
        proof: SessionProof,
        /// The nickname, sealed.
        nickname: SealedDatum,
        /// The avatar URL, sealed.
        avatar_url: SealedDatum,
        /// A unionid the payload revealed, hashed and sealed.
        unionid: Option<SealedUnionId>,
        /// How it arrived.
        via: ProfileSource,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Record a verified phone number.
    VerifyPhone {
        /// The request's session.
        proof: SessionProof,
        /// The national number, sealed.
        phone: SealedDatum,
        /// The country calling code.
        country_code: String,
        /// How it was verified.
        via: PhoneSource,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Bind the identity to a user.
    Bind {
        /// The request's session.
        proof: SessionProof,
        /// The user.
        user_id: UserId,
        /// How.
        via: BindMethod,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Bind the identity to the user its unionid is bound to in another app of the same
    /// tenant (`linked_from`), right after a login.
    LinkByUnionid {
        /// The login's session.
        proof: SessionProof,
        /// The user.
        user_id: UserId,
        /// The account whose binding this one follows.
        linked_from: AccountId,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Record that the unionid names several users in the tenant, so no link was made.
    DeclineLink {
        /// The users its bindings name.
        users: Vec<UserId>,
        /// Now.
        at: DateTime<Utc>,
    },
    /// End the binding to `user_id`.
    Unbind {
        /// The user the caller believes is bound.
        user_id: UserId,
        /// Why.
        reason: UnbindReason,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Record that the account's personal data key is destroyed (and unbind, if bound).
    ErasePersonalData {
        /// Now.
        at: DateTime<Utc>,
    },
    /// Carry the identity over from another system, with its binding if it had one.
    /// Only a new account is imported: one with a history imports nothing.
    Import {
        /// The app.
        appid: AppId,
        /// The WeChat user.
        openid: OpenId,
        /// The unionid, hashed and sealed, if the other system had one.
        unionid: Option<SealedUnionId>,
        /// The app's kind: the channel the identity logs in through.
        channel: Channel,
        /// The nickname, sealed.
        nickname: Option<SealedDatum>,
        /// The avatar URL, sealed.
        avatar_url: Option<SealedDatum>,
        /// The row the identity was read from.
        source: Provenance,
        /// When the other system recorded it.
        recorded_there: DateTime<Utc>,
        /// The binding the other system had: the user, the row, and when it was made.
        binding: Option<ImportedBinding>,
        /// Now.
        at: DateTime<Utc>,
    },
}

/// A binding carried over from another system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedBinding {
    /// The user.
    pub user_id: UserId,
    /// The row it was read from.
    pub source: Provenance,
    /// When the other system made it.
    pub bound_there: DateTime<Utc>,
}
