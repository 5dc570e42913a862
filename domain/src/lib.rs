//! miniauth's domain: pure, synchronous, free of I/O.
//!
//! * [`SocialAccount`], the aggregate of one WeChat identity (appid, openid), with its
//!   [events](events) and [commands](commands);
//! * value types that cannot be invalid ([`AppId`], [`OpenId`], [`SessionKey`], …);
//! * WeChat's payload [crypto] as pure functions.

pub mod account;
pub mod audit;
pub mod channel;
pub mod commands;
pub mod crypto;
pub mod error;
pub mod events;
pub mod ids;
pub mod phone;
pub mod sealed;
pub mod session_key;

pub use account::{SessionRecord, SocialAccount, RETAINED_SESSIONS};
pub use channel::Channel;
pub use commands::{ImportedBinding, SessionProof, SocialAccountCommand};
pub use error::{AccountError, ErrorCode, InvalidValue, PayloadError};
pub use events::{
    current_version, AccountImported, BindMethod, LinkDeclined, PersonalDataErased, PhoneSource,
    PhoneVerified, ProfileDecrypted, ProfileSource, Provenance, SessionObtained,
    SocialAccountEvent, UnbindReason, Unbound, UserBound, CHANNEL_VERSION, EVENT_VERSION,
    IMPORTED_CHANNEL_VERSION, SEALED_UNIONID_VERSION,
};
pub use ids::{AccountId, AppId, OneTimeCode, OpenId, TenantId, UnionId, UserId};
pub use phone::PhoneNumber;
pub use sealed::{PersonalField, SealedDatum, SealedSecret, SealedUnionId};
pub use session_key::SessionKey;
