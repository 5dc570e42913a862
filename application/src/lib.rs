//! miniauth's use cases. Each drives the [`SocialAccount`](miniauth_domain::SocialAccount)
//! aggregate through the [ports], which adapters implement:
//!
//! | step of the flow | use case |
//! | --- | --- |
//! | 2–4 login code → session, ticket, tokens if bound | [`MiniAuth::login`] |
//! | 6–7 profile | [`MiniAuth::submit_profile`] |
//! | 8–10 phone → match or register → bind | [`MiniAuth::verify_phone`] |
//! | 11 account + password bind | [`MiniAuth::bind_with_password`] |
//! | bind while logged in | [`MiniAuth::bind_current_user`] |
//! | 12 ticket → tokens | [`MiniAuth::grant_ticket`] |
//! | 13 refresh, logout, me, unbind | [`MiniAuth::grant_refresh`], [`MiniAuth::logout`], [`MiniAuth::me`], [`MiniAuth::unbind`] |
//! | browser login of an Official Account or a website | [`MiniAuth::authorize`], [`MiniAuth::callback`], [`MiniAuth::exchange_result`] |
//! | erasure | [`MiniAuth::erase`] |
//! | disable, enable a user | [`MiniAuth::disable_user`], [`MiniAuth::enable_user`] |
//! | the console: find users, unbind with a reason, operator sign-in | [`MiniAuth::find_users`], [`MiniAuth::unbind_identity`], [`MiniAuth::check_operator_secret`] |
//! | history, bindings at an instant, export, verification of the log | [`Audit`] ([`MiniAuth::audit`]) |

pub mod audit;
mod binding;
pub mod browser;
pub mod context;
mod erasure;
pub mod error;
mod grants;
pub mod import;
pub mod legacy_key;
mod login;
#[cfg(any(test, feature = "test-support"))]
pub mod memory;
pub mod operator;
mod phone;
pub mod ports;
mod profile;
pub mod secret;
mod service;
pub mod settings;
mod token_services;
mod users;
pub mod webhooks;

pub use audit::Audit;
pub use browser::{AuthorizeRequest, BrowserKey, BrowserStart};
pub use context::{Actor, EventMetadata, RequestContext};
pub use error::{AppError, ErrorKind, LegacyKeyRefusal};
pub use grants::Me;
pub use login::LoginOutcome;
pub use operator::{OperatorReason, UserQuery};
pub use phone::{PhoneInput, PhoneOutcome};
pub use profile::{ProfileInput, ProfileOutcome};
pub use secret::Secret;
pub use service::{IssuedTicket, MiniAuth, Ports, Tokens, MAX_COMMIT_ATTEMPTS};
pub use settings::{
    AppCatalog, AppSettings, Lifetimes, RegistrationPolicy, DEFAULT_PAYLOAD_REJECTIONS_PER_KEY,
};
pub use token_services::{
    ActiveToken, Introspection, IntrospectionClient, IntrospectionClients, IntrospectionScope,
    TokenKind, TokenTypeHint,
};
