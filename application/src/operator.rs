//! What an operator does from the console, beside what the admin API already offers
//! (disable, enable, erase, the [`Audit`](crate::Audit) questions): find users, end a
//! binding with a reason, and keep console sign-ins honest (throttled; a signed-out
//! session stays ended on every instance).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use miniauth_domain::{AccountId, AppId, InvalidValue, OpenId, PhoneNumber, UnbindReason, UserId};

use crate::context::RequestContext;
use crate::error::AppError;
use crate::ports::{SessionScope, ThrottleKey, UsageKey, UserRecord};
use crate::service::MiniAuth;

/// Why an operator ended a binding: a code from a fixed list, recorded with the
/// `Unbound` event as its `note`. Not free text: the log is kept forever and cannot
/// be edited, so nothing typed there may carry a person's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorReason {
    /// The person asked support to end it.
    PersonAsked,
    /// The phone or WeChat account was lost or changed hands.
    DeviceLost,
    /// The identity was bound to the wrong user.
    WrongUser,
    /// Fraud or abuse is suspected.
    SuspectedFraud,
    /// A legal or compliance request.
    LegalRequest,
}

impl OperatorReason {
    /// Every reason, in the order a form lists them.
    pub const ALL: [Self; 5] = [
        Self::PersonAsked,
        Self::DeviceLost,
        Self::WrongUser,
        Self::SuspectedFraud,
        Self::LegalRequest,
    ];

    /// The code recorded in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PersonAsked => "person_asked",
            Self::DeviceLost => "device_lost",
            Self::WrongUser => "wrong_user",
            Self::SuspectedFraud => "suspected_fraud",
            Self::LegalRequest => "legal_request",
        }
    }

    /// What an operator reads.
    pub fn label(self) -> &'static str {
        match self {
            Self::PersonAsked => "The person asked support to unbind",
            Self::DeviceLost => "Phone or WeChat account lost or changed hands",
            Self::WrongUser => "Bound to the wrong user",
            Self::SuspectedFraud => "Suspected fraud or abuse",
            Self::LegalRequest => "Legal or compliance request",
        }
    }
}

impl fmt::Display for OperatorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OperatorReason {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == text)
            .ok_or_else(|| InvalidValue::new("reason", "must be one of the listed reasons"))
    }
}

/// What a search of users matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserQuery {
    /// A user id.
    Id(UserId),
    /// An account (login) name, in any tenant of the configured apps.
    Account(String),
    /// A full phone number (exact), in any tenant of the configured apps.
    Phone(PhoneNumber),
}

impl MiniAuth {
    /// The users a query matches (at most one per tenant), by the user directory.
    pub async fn find_users(&self, query: &UserQuery) -> Result<Vec<UserRecord>, AppError> {
        let mut found = Vec::new();
        if let UserQuery::Id(id) = query {
            found.extend(self.ports.users.get(*id).await?);
            return Ok(found);
        }
        let tenants: BTreeSet<_> = self.apps.iter().map(|app| app.tenant.clone()).collect();
        for tenant in &tenants {
            let user = match query {
                UserQuery::Account(account) => {
                    self.ports.users.find_by_account(tenant, account).await?
                }
                UserQuery::Phone(phone) => self.ports.users.find_by_phone(tenant, phone).await?,
                UserQuery::Id(_) => None,
            };
            found.extend(user);
        }
        Ok(found)
    }

    /// An operator ends the binding of (appid, openid), whoever it binds, with a
    /// reason: the log records `Unbound` (reason `administrator`, the reason code as
    /// its `note`, the actor from `ctx`), and the user's sessions through this app
    /// end. Answers the user it was bound to; `NotBound` when it was not.
    pub async fn unbind_identity(
        &self,
        ctx: &RequestContext,
        appid: &AppId,
        openid: &OpenId,
        reason: OperatorReason,
    ) -> Result<UserId, AppError> {
        if self.apps.get(appid).is_none() {
            return Err(AppError::UnknownApp);
        }
        let id = AccountId::new(appid, openid);
        let context = self.load(&id).await?;
        if context.state().latest_session() == 0 {
            return Err(AppError::AccountNotFound);
        }
        let user = context.state().bound_user().ok_or(AppError::NotBound)?;
        let ended = self
            .end_binding(
                ctx,
                &id,
                user,
                UnbindReason::Administrator,
                Some(reason.as_str()),
            )
            .await;
        if matches!(ended, Ok(()) | Err(AppError::NotBound)) {
            self.revoke_sessions(user, SessionScope::App(appid.clone()))
                .await?;
        }
        ended.map(|()| user)
    }

    /// Checks the admin token (the admin API, `/metrics`, the console's sign-in) as
    /// `matches` says, throttled per client with a budget of its own. See
    /// [`MiniAuth::check_secret_try`]. `BadCredentials` when it does not match.
    pub async fn check_operator_secret(
        &self,
        ctx: &RequestContext,
        matches: impl FnOnce() -> bool,
    ) -> Result<(), AppError> {
        let key = ctx.client_net().map(ThrottleKey::OperatorSecret);
        if self.check_secret_try(key, matches).await? {
            Ok(())
        } else {
            Err(AppError::BadCredentials)
        }
    }

    /// One try of a secret that only an operator or a configured service holds. The try
    /// is counted before the secret is compared — one atomic hit, so that a burst of
    /// simultaneous guesses cannot all pass a check made before any of them failed —
    /// and a try over the limit is refused without comparing (`TooManyAttempts`, even
    /// with the right secret). A match forgives the client's tries: those who hold the
    /// secret are not slowed by their own use of it. Answers whether it matched.
    pub(crate) async fn check_secret_try(
        &self,
        key: Option<ThrottleKey>,
        matches: impl FnOnce() -> bool,
    ) -> Result<bool, AppError> {
        if let Some(key) = &key {
            self.ports
                .limiter
                .hit(key, self.now())
                .await
                .map_err(|e| AppError::throttled(e, AppError::TooManyAttempts))?;
        }
        if !matches() {
            return Ok(false);
        }
        if let Some(key) = &key {
            self.ports.limiter.reset(key).await?;
        }
        Ok(true)
    }

    /// Ends a console session (named by a fingerprint of its id, never the id) on
    /// every instance sharing the store, until `until` (when it would have expired
    /// anyway).
    pub async fn end_operator_session(
        &self,
        fingerprint: &str,
        until: DateTime<Utc>,
    ) -> Result<(), AppError> {
        let key = UsageKey::ConsoleSessionEnded(fingerprint.to_owned());
        self.ports.counters.count(&key, until).await?;
        Ok(())
    }

    /// Whether a console session was signed out.
    pub async fn operator_session_ended(&self, fingerprint: &str) -> Result<bool, AppError> {
        let key = UsageKey::ConsoleSessionEnded(fingerprint.to_owned());
        Ok(self.ports.counters.uses(&key).await? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_back_from_their_codes_and_nothing_else_does() {
        for reason in OperatorReason::ALL {
            assert_eq!(reason.as_str().parse::<OperatorReason>(), Ok(reason));
        }
        assert!("Mr Wang called, 13800000001"
            .parse::<OperatorReason>()
            .is_err());
        assert!("".parse::<OperatorReason>().is_err());
    }
}
