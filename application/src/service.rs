//! `MiniAuth`: the use cases, holding the ports. Each use case lives in a file of its
//! own; this file holds what they share.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use miniauth_domain::{
    AccountError, AccountId, AppId, PayloadError, PersonalField, SessionKey, SessionProof,
    SocialAccount, SocialAccountCommand,
};

use crate::audit::Audit;
use crate::context::{EventMetadata, RequestContext};
use crate::error::AppError;
use crate::ports::{
    AccessToken, AccountRepository, AttemptLimiter, AuditLog, BindingRegistry, Chain, Claim, Clock,
    CommitError, LoadedAccount, PersonalDataVault, RefreshToken, RefreshTokenStore, SessionOwner,
    SessionScope, TicketClaims, TicketCodec, TicketError, TokenIssuer, TokenSubject, UsageCounters,
    UsageKey, UserDirectory, UserRecord, UserStatus, WeChatApi,
};
use crate::settings::{AppCatalog, AppSettings, Lifetimes};

/// A login session just started: its tokens' subject and its first refresh token.
pub(crate) type StartedSession = (TokenSubject, RefreshToken);

/// Whose login session `user`'s tokens through `app` (if any) belong to — once the
/// user is active and, for an app, of its tenant: every token-issuing path checks
/// here, before anything is written.
pub(crate) fn session_owner(
    user: &UserRecord,
    app: Option<&AppSettings>,
) -> Result<SessionOwner, AppError> {
    ensure_active(user)?;
    if let Some(app) = app {
        ensure_same_tenant(user, app)?;
    }
    Ok(SessionOwner {
        user_id: user.id,
        tenant: user.tenant.clone(),
        appid: app.map(|app| app.appid.clone()),
    })
}

/// How often a command is re-decided on fresh state when another instance committed
/// to the same account first.
pub const MAX_COMMIT_ATTEMPTS: usize = 5;

/// The adapters the use cases drive.
pub struct Ports {
    /// WeChat's server API.
    pub wechat: Arc<dyn WeChatApi>,
    /// The business users.
    pub users: Arc<dyn UserDirectory>,
    /// Uniqueness of bindings across accounts.
    pub registry: Arc<dyn BindingRegistry>,
    /// Tickets (bind keys).
    pub tickets: Arc<dyn TicketCodec>,
    /// Access tokens.
    pub tokens: Arc<dyn TokenIssuer>,
    /// Refresh tokens.
    pub refresh: Arc<dyn RefreshTokenStore>,
    /// Sealing of secrets and personal data.
    pub vault: Arc<dyn PersonalDataVault>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Password attempt throttling.
    pub limiter: Arc<dyn AttemptLimiter>,
    /// Single-use and few-tries counters, shared across instances.
    pub counters: Arc<dyn UsageCounters>,
    /// The `SocialAccount`s.
    pub accounts: Arc<dyn AccountRepository>,
}

/// A ticket handed to the front end (its "bind key").
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedTicket {
    /// The signed ticket.
    pub token: String,
    /// Seconds it stays valid.
    pub expires_in: u64,
}

impl fmt::Debug for IssuedTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IssuedTicket(<redacted>, expires_in: {})",
            self.expires_in
        )
    }
}

/// An access token and a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Who they are for.
    pub user_id: miniauth_domain::UserId,
    /// The JWT.
    pub access: AccessToken,
    /// The opaque refresh token.
    pub refresh: RefreshToken,
}

/// The service: every use case of miniauth.
pub struct MiniAuth {
    pub(crate) apps: AppCatalog,
    pub(crate) lifetimes: Lifetimes,
    pub(crate) ports: Ports,
    /// GitEgg's bind keys, accepted for a while after a migration (off by default).
    pub(crate) legacy: Option<crate::legacy_key::LegacyBridge>,
}

/// How long a session key's count of rejected payloads is kept: longer than WeChat
/// keeps a session key alive between logins.
const PAYLOAD_TRIES_KEPT_DAYS: i64 = 30;

/// A verified ticket, with the app it belongs to.
pub(crate) struct OpenedTicket<'a> {
    pub app: &'a AppSettings,
    pub claims: TicketClaims,
    pub account: AccountId,
}

impl OpenedTicket<'_> {
    /// Refuses a ticket of an app without a session key (not a mini program) on the
    /// routes that need one: a phone, a profile.
    pub(crate) fn require_session_key(&self) -> Result<(), AppError> {
        if self.app.kind.has_session_key() {
            Ok(())
        } else {
            Err(AppError::ChannelUnsupported)
        }
    }
}

impl MiniAuth {
    /// Wires the use cases to their ports.
    pub fn new(ports: Ports, apps: AppCatalog, lifetimes: Lifetimes) -> Self {
        Self {
            apps,
            lifetimes,
            ports,
            legacy: None,
        }
    }

    /// The configured apps.
    pub fn apps(&self) -> &AppCatalog {
        &self.apps
    }

    /// The auditors' questions answered from `log`, with this service's vault (to
    /// mask personal data) and clock.
    pub fn audit(&self, log: Arc<dyn AuditLog>) -> Audit {
        Audit::new(log, self.ports.vault.clone(), self.ports.clock.clone())
            .with_apps(self.apps.iter().map(|app| app.appid.clone()))
    }

    /// The time on the service's clock: the edge reads it too, so that the times it
    /// answers agree with the ones the use cases decided on.
    pub fn now(&self) -> DateTime<Utc> {
        self.ports.clock.now()
    }

    pub(crate) fn app(&self, appid: &str) -> Result<&AppSettings, AppError> {
        self.apps.find(appid).ok_or(AppError::UnknownApp)
    }

    /// Verifies a ticket for `appid`: present, well formed, signed by us, not expired,
    /// and issued for this app.
    pub(crate) fn open_ticket(
        &self,
        appid: &str,
        ticket: &str,
    ) -> Result<OpenedTicket<'_>, AppError> {
        let app = self.app(appid)?;
        let claims = self.verify_ticket(ticket)?;
        if claims.appid != app.appid {
            return Err(AppError::TicketAppMismatch);
        }
        let account = AccountId::new(&claims.appid, &claims.openid);
        Ok(OpenedTicket {
            app,
            claims,
            account,
        })
    }

    /// [`MiniAuth::open_ticket`] for a step that spends it (binding, the phone route):
    /// a ticket issued spent is refused at once, before a billed WeChat call, a password
    /// hash or a registration that [`MiniAuth::spend_ticket`] would refuse anyway.
    pub(crate) fn open_ticket_to_spend(
        &self,
        appid: &str,
        ticket: &str,
    ) -> Result<OpenedTicket<'_>, AppError> {
        let opened = self.open_ticket(appid, ticket)?;
        if opened.claims.spent {
            return Err(AppError::TicketAlreadyUsed);
        }
        Ok(opened)
    }

    pub(crate) fn verify_ticket(&self, ticket: &str) -> Result<TicketClaims, AppError> {
        let ticket = ticket.trim();
        if ticket.is_empty() {
            return Err(TicketError::Missing.into());
        }
        Ok(self.ports.tickets.verify(ticket, self.now())?)
    }

    /// A ticket for the account's latest session; `spent` when the answer that carries
    /// it carries tokens too (it then buys nothing more).
    pub(crate) fn issue_ticket(
        &self,
        appid: &AppId,
        account: &SocialAccount,
        spent: bool,
    ) -> Result<(IssuedTicket, TicketClaims), AppError> {
        self.issue_ticket_for(appid, account, self.lifetimes.ticket, spent)
    }

    /// [`MiniAuth::issue_ticket`] living `lifetime`.
    pub(crate) fn issue_ticket_for(
        &self,
        appid: &AppId,
        account: &SocialAccount,
        lifetime: chrono::Duration,
        spent: bool,
    ) -> Result<(IssuedTicket, TicketClaims), AppError> {
        let openid = account
            .openid()
            .ok_or_else(|| AppError::Internal("ticket for an account without a session".into()))?;
        let now = self.now();
        let claims = TicketClaims {
            appid: appid.clone(),
            openid: openid.clone(),
            session_seq: account.latest_session(),
            issued_at: now,
            expires_at: now + lifetime,
            spent,
        };
        let issued = IssuedTicket {
            token: self.ports.tickets.issue(&claims),
            expires_in: lifetime.num_seconds().max(0) as u64,
        };
        Ok((issued, claims))
    }

    pub(crate) async fn load(&self, id: &AccountId) -> Result<LoadedAccount, AppError> {
        Ok(self.ports.accounts.load(id).await?)
    }

    /// Decides `commands` on the loaded state and commits their events in one append.
    /// When another writer got there first, reloads and decides again (bounded).
    /// Returns the state after the events.
    pub(crate) async fn commit(
        &self,
        ctx: &RequestContext,
        id: &AccountId,
        context: LoadedAccount,
        commands: Vec<SocialAccountCommand>,
    ) -> Result<SocialAccount, AppError> {
        self.commit_noted(ctx, id, context, commands, None).await
    }

    /// [`Self::commit`], recording `note` (an operator's reason code) with the events.
    pub(crate) async fn commit_noted(
        &self,
        ctx: &RequestContext,
        id: &AccountId,
        context: LoadedAccount,
        commands: Vec<SocialAccountCommand>,
        note: Option<&str>,
    ) -> Result<SocialAccount, AppError> {
        Ok(self
            .commit_inner(ctx, id, context, commands, None, note)
            .await?
            .0)
    }

    /// [`commit`](Self::commit), which also starts the login session of `session` in
    /// the same durable write when the decided state is bound to its user (one commit
    /// for a login that answers tokens; [`AccountRepository::commit_with_session`]).
    /// Answers the state after the events and the session started, if one was.
    pub(crate) async fn commit_with(
        &self,
        ctx: &RequestContext,
        id: &AccountId,
        context: LoadedAccount,
        commands: Vec<SocialAccountCommand>,
        session: Option<&SessionOwner>,
    ) -> Result<(SocialAccount, Option<StartedSession>), AppError> {
        self.commit_inner(ctx, id, context, commands, session, None)
            .await
    }

    async fn commit_inner(
        &self,
        ctx: &RequestContext,
        id: &AccountId,
        mut context: LoadedAccount,
        commands: Vec<SocialAccountCommand>,
        session: Option<&SessionOwner>,
        note: Option<&str>,
    ) -> Result<(SocialAccount, Option<StartedSession>), AppError> {
        let mut client_ip = None;
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let mut state = context.state().clone();
            let mut events = Vec::new();
            for command in commands.iter().cloned() {
                for event in state.decide(command)? {
                    state.apply(event.clone());
                    events.push(event);
                }
            }
            if events.is_empty() {
                return Ok((state, None));
            }
            // The client IP is the person's data: sealed with the account's data key,
            // once something is to be written (sealing may create the key).
            if let (Some(ip), None) = (&ctx.client_ip, &client_ip) {
                client_ip = Some(
                    self.ports
                        .vault
                        .seal_personal(id, PersonalField::ClientIp, &ip.to_string())
                        .await?,
                );
            }
            let now = self.now();
            let mut metadata = ctx.metadata_sealed(now, client_ip.as_ref());
            if let Some(note) = note {
                metadata.insert(EventMetadata::NOTE.to_owned(), note.to_owned());
            }
            // The context still holds the state *before* these events: the store may
            // snapshot by applying them to it, exactly once.
            let accounts = &self.ports.accounts;
            let committed = match session.filter(|o| state.bound_user() == Some(o.user_id)) {
                Some(owner) => accounts
                    .commit_with_session(context, events, metadata, owner, now)
                    .await
                    .map(Some),
                None => accounts
                    .commit(context, events, metadata)
                    .await
                    .map(|()| None),
            };
            match committed {
                Ok(started) => return Ok((state, started)),
                Err(CommitError::Conflict) => context = self.load(id).await?,
                Err(CommitError::Port(error)) => return Err(error.into()),
            }
        }
        Err(AppError::Contention)
    }

    /// Tries the session keys a legacy payload may be encrypted under (the ticket's,
    /// then the newest) and returns what opened, with the proof of which session it was.
    ///
    /// The defence against the padding oracle lives here. Every failure after the
    /// shape checks answers one code ([`AppError::PayloadRejected`]). Each key is tried
    /// only after a try was counted against it in the shared counters (a success gives
    /// the try back), so however many requests race, a key has at most
    /// the app's `payload_rejections_per_key` payloads rejected. The rejection that reaches the
    /// budget spends the key: WeChat is asked to retire it, and it is never tried again.
    pub(crate) async fn open_payload<T>(
        &self,
        ctx: &RequestContext,
        opened: &OpenedTicket<'_>,
        state: &SocialAccount,
        open: impl Fn(&SessionKey) -> Result<T, PayloadError>,
    ) -> Result<(T, SessionProof, SessionKey), AppError> {
        if !opened.app.legacy_payloads {
            return Err(AppError::LegacyPayloadsDisabled);
        }
        let ticket_session = opened.claims.session_seq;
        let budget = opened.app.payload_rejections_per_key.max(1);
        let keep_until = self.now() + chrono::Duration::days(PAYLOAD_TRIES_KEPT_DAYS);
        let mut tried = false;
        let account = &opened.account;
        for record in state.candidate_keys(ticket_session)? {
            let key = self
                .ports
                .vault
                .unseal_secret(account, &record.session_key)
                .await?;
            let tries = UsageKey::PayloadTries(key.fingerprint(account));
            let count = self.ports.counters.count(&tries, keep_until).await?;
            if count > budget {
                continue;
            }
            tried = true;
            match open(&key) {
                Ok(payload) => {
                    self.ports.counters.uncount(&tries).await?;
                    let proof = SessionProof::payload(ticket_session, record.seq);
                    return Ok((payload, proof, key));
                }
                Err(cause) => {
                    tracing::debug!(%cause, account = %opened.account, "legacy payload rejected");
                    if count == budget {
                        self.retire_session_key(ctx, opened, &key).await;
                    }
                }
            }
        }
        if !tried {
            Err(AppError::SessionKeySpent)
        } else if ticket_session < state.latest_session() {
            Err(AccountError::TicketSessionSuperseded.into())
        } else {
            Err(AppError::PayloadRejected)
        }
    }

    /// A key that rejected its budget of payloads: WeChat retires it and answers the
    /// user's new key, recorded as a new session. If WeChat refuses (frequent resets,
    /// or the key is no longer the user's current one), the key stays spent until a
    /// login brings another; the cause is for operators only.
    async fn retire_session_key(
        &self,
        ctx: &RequestContext,
        opened: &OpenedTicket<'_>,
        key: &SessionKey,
    ) {
        let account = &opened.account;
        tracing::warn!(%account, "a session key rejected its budget of payloads: retiring it");
        let appid = &opened.app.appid;
        let openid = &opened.claims.openid;
        let fresh = match self
            .ports
            .wechat
            .reset_session_key(appid, openid, key)
            .await
        {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::debug!(%error, %account, "resetusersessionkey failed; the key stays spent");
                return;
            }
        };
        let recorded = async {
            let sealed = self.ports.vault.seal_secret(account, &fresh).await?;
            let context = self.load(account).await?;
            let command = SocialAccountCommand::ObtainSession {
                appid: appid.clone(),
                openid: openid.clone(),
                unionid: None,
                session_key: sealed,
                at: self.now(),
            };
            self.commit(ctx, account, context, vec![command]).await
        };
        if let Err(error) = recorded.await {
            tracing::warn!(%error, %account, "could not record the session after resetusersessionkey");
        }
    }

    /// Counts a use of this ticket that issues tokens or binds: the first one passes,
    /// every later one is [`AppError::TicketAlreadyUsed`], on whichever instance it
    /// arrives. Called after every check that can refuse the request and before
    /// anything is written, so that a refusal leaves the ticket usable and a replay of
    /// a logged request (GitEgg sends the ticket in the query string) writes nothing.
    pub(crate) async fn spend_ticket(&self, claims: &TicketClaims) -> Result<(), AppError> {
        if claims.spent {
            return Err(AppError::TicketAlreadyUsed);
        }
        let exchanges = UsageKey::TicketExchanges(ticket_fingerprint(claims));
        match self
            .ports
            .counters
            .count(&exchanges, claims.expires_at)
            .await?
        {
            1 => Ok(()),
            _ => Err(AppError::TicketAlreadyUsed),
        }
    }

    /// The user, who must exist and be active.
    pub(crate) async fn active_user(
        &self,
        id: miniauth_domain::UserId,
    ) -> Result<UserRecord, AppError> {
        let user = self
            .ports
            .users
            .get(id)
            .await?
            .ok_or(AppError::UserNotFound)?;
        ensure_active(&user)?;
        Ok(user)
    }

    /// A fresh access token and a new refresh-token family (login session) for `user`,
    /// logging in through `app` if any. Tokens issued for an app carry the app's
    /// tenant, and an app never issues tokens for a user of another tenant.
    pub(crate) async fn issue_tokens(
        &self,
        user: &UserRecord,
        app: Option<&AppSettings>,
    ) -> Result<Tokens, AppError> {
        let owner = session_owner(user, app)?;
        let started = self.ports.refresh.issue(&owner, self.now()).await?;
        self.tokens_of(started)
    }

    /// The tokens of a login session just started (by [`issue_tokens`](Self::issue_tokens),
    /// or with an account's events by [`commit_with`](Self::commit_with)).
    pub(crate) fn tokens_of(&self, (subject, refresh): StartedSession) -> Result<Tokens, AppError> {
        let access = self.ports.tokens.issue(&subject, self.now())?;
        Ok(Tokens {
            user_id: subject.user_id,
            access,
            refresh,
        })
    }

    /// Ends `user`'s sessions in `scope`: their refresh tokens stop refreshing and
    /// their access tokens stop working here.
    pub(crate) async fn revoke_sessions(
        &self,
        user: miniauth_domain::UserId,
        scope: SessionScope,
    ) -> Result<(), AppError> {
        let revoked = self
            .ports
            .refresh
            .revoke_sessions(user, &scope, self.now())
            .await?;
        tracing::info!(%user, ?scope, revoked, "revoked login sessions");
        Ok(())
    }

    /// Undoes a claim this request made, after the bind failed. A failure here is
    /// logged: the registry's reconciliation with the event log repairs it.
    pub(crate) async fn release_if_new(
        &self,
        claim: Claim,
        id: &AccountId,
        user: miniauth_domain::UserId,
    ) {
        if claim == Claim::New {
            if let Err(error) = self
                .ports
                .registry
                .release(&id.appid(), &id.openid(), user)
                .await
            {
                tracing::warn!(error = %Chain(&error), account = %id, "could not release a binding claim");
            }
        }
    }
}

/// Names a ticket by what it says (app, identity, session, issue time), hashed: two
/// spellings of one ticket are one ticket, and the store learns no openid.
fn ticket_fingerprint(claims: &TicketClaims) -> String {
    miniauth_domain::crypto::fingerprint(
        "miniauth/ticket-fingerprint/v1",
        &[
            claims.appid.as_str().as_bytes(),
            claims.openid.as_str().as_bytes(),
            claims.session_seq.to_string().as_bytes(),
            claims.issued_at.timestamp_micros().to_string().as_bytes(),
        ],
    )
}

/// Refuses to let `user` meet an app of another tenant.
pub(crate) fn ensure_same_tenant(user: &UserRecord, app: &AppSettings) -> Result<(), AppError> {
    if user.tenant == app.tenant {
        Ok(())
    } else {
        Err(AppError::TenantMismatch)
    }
}

pub(crate) fn ensure_active(user: &UserRecord) -> Result<(), AppError> {
    match user.status {
        UserStatus::Active => Ok(()),
        UserStatus::Disabled => Err(AppError::UserDisabled),
    }
}
