//! Steps 2–4 of the flow: a login code becomes a session, a ticket, and — for a
//! returning user — tokens at once.

use miniauth_domain::{
    AccountId, AppId, BindMethod, OneTimeCode, OpenId, PersonalField, SealedUnionId, SessionProof,
    SocialAccount, SocialAccountCommand, UnionId, UserId,
};

use crate::context::RequestContext;
use crate::error::AppError;
use crate::phone::BindRequest;
use crate::ports::ThrottleKey;
use crate::service::{ensure_same_tenant, session_owner, IssuedTicket, MiniAuth, Tokens};
use crate::settings::AppSettings;

/// What a login answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    /// The ticket (bind key) for the next steps.
    pub ticket: IssuedTicket,
    /// The WeChat identity.
    pub openid: OpenId,
    /// Its unionid, if known.
    pub unionid: Option<UnionId>,
    /// The user it is bound to, if any.
    pub bound_user: Option<UserId>,
    /// Whether a profile is on record.
    pub has_profile: bool,
    /// Whether a phone is on record.
    pub has_phone: bool,
    /// Tokens, when the identity is already bound (one round trip for returning users).
    pub tokens: Option<Tokens>,
}

impl MiniAuth {
    /// Exchanges a `wx.login` code: code2session, records the session (its key sealed),
    /// and answers a ticket, plus tokens when the identity is already bound. The ticket
    /// of an answer with tokens has been used: it buys no second session.
    pub async fn login(
        &self,
        ctx: &RequestContext,
        appid: &str,
        code: &str,
    ) -> Result<LoginOutcome, AppError> {
        self.login_with(ctx, appid, code, true).await
    }

    /// [`MiniAuth::login`] for front ends that exchange the ticket for tokens in a
    /// second call (GitEgg's `/login` then `/oauth/token` with `social_key`): no tokens,
    /// and the ticket stays unused.
    pub async fn login_for_ticket(
        &self,
        ctx: &RequestContext,
        appid: &str,
        code: &str,
    ) -> Result<LoginOutcome, AppError> {
        self.login_with(ctx, appid, code, false).await
    }

    async fn login_with(
        &self,
        ctx: &RequestContext,
        appid: &str,
        code: &str,
        with_tokens: bool,
    ) -> Result<LoginOutcome, AppError> {
        let app = self.app(appid)?;
        let code = OneTimeCode::parse("code", code)?;
        // Every login costs a code2session call against the app's quota: one client
        // may only spend its share of it.
        if let Some(client) = ctx.client_net() {
            self.ports
                .limiter
                .hit(&ThrottleKey::Login(client), self.now())
                .await
                .map_err(|e| AppError::throttled(e, AppError::TooManyLogins))?;
        }
        let session = self.ports.wechat.code_to_session(&app.appid, &code).await?;
        let id = AccountId::new(&app.appid, &session.openid);
        let sealed = self
            .ports
            .vault
            .seal_secret(&id, &session.session_key)
            .await?;
        let unionid = match &session.unionid {
            Some(unionid) => Some(self.ports.vault.seal_unionid(&id, unionid).await?),
            None => None,
        };
        let context = self.load(&id).await?;
        // A returning user must not have been disabled; check before writing anything.
        let bound_before = context.state().bound_user();
        // So must it be of the app's tenant (a binding across tenants made before
        // tenants were checked everywhere logs nobody in).
        let user = match bound_before {
            Some(user_id) => {
                let user = self.active_user(user_id).await?;
                ensure_same_tenant(&user, app)?;
                Some(user)
            }
            None => None,
        };
        // A returning user's login session starts in the same durable write as the
        // session's event (one commit), once every check above has passed.
        let owner = match &user {
            Some(user) if with_tokens => Some(session_owner(user, Some(app))?),
            _ => None,
        };
        let command = SocialAccountCommand::ObtainSession {
            appid: app.appid.clone(),
            openid: session.openid.clone(),
            unionid,
            session_key: sealed,
            at: self.now(),
        };
        let (mut state, started) = self
            .commit_with(ctx, &id, context, vec![command], owner.as_ref())
            .await?;
        if state.bound_user().is_none() && app.link_by_unionid {
            state = self.link_by_unionid(ctx, app, &id, state).await?;
        }
        let (ticket, claims) = self.issue_ticket(&app.appid, &state)?;
        let tokens = match (state.bound_user(), started) {
            (Some(bound), Some(started)) if started.0.user_id == bound => {
                self.spend_ticket(&claims).await?;
                Some(self.tokens_of(started)?)
            }
            (Some(bound), _) if with_tokens => {
                let user = match user {
                    Some(user) if user.id == bound => user,
                    _ => self.active_user(bound).await?,
                };
                self.spend_ticket(&claims).await?;
                Some(self.issue_tokens(&user, Some(app)).await?)
            }
            _ => None,
        };
        // WeChat sends the unionid with every login of an app bound to an Open Platform
        // account; an older one is read back from the log while it is not erased.
        let unionid = match (session.unionid, state.unionid()) {
            (Some(fresh), _) => Some(fresh),
            (
                None,
                Some(SealedUnionId {
                    sealed: Some(sealed),
                    ..
                }),
            ) => self
                .ports
                .vault
                .unseal_personal(&id, PersonalField::UnionId, sealed)
                .await?
                .and_then(|text| UnionId::parse(&text).ok()),
            (None, _) => None,
        };
        Ok(LoginOutcome {
            ticket,
            openid: session.openid,
            unionid,
            bound_user: state.bound_user(),
            has_profile: state.has_profile(),
            has_phone: state.has_phone(),
            tokens,
        })
    }
}

impl MiniAuth {
    /// Step 6 by unionid: an unbound identity whose unionid is bound, in other apps of
    /// the same tenant, to exactly one active user of the tenant is bound to that user
    /// (`UserBound` via `unionid_match`, naming the account it follows). When those
    /// bindings name several users, nothing is linked and `LinkDeclined` says so in the
    /// account's history. A link the registry refuses (the user already has another
    /// identity in this app) leaves the identity unbound, as before.
    pub(crate) async fn link_by_unionid(
        &self,
        ctx: &RequestContext,
        app: &AppSettings,
        id: &AccountId,
        state: SocialAccount,
    ) -> Result<SocialAccount, AppError> {
        let Some(hash) = state.unionid().map(|u| u.hash.clone()) else {
            return Ok(state);
        };
        let tenant_apps: Vec<AppId> = self
            .apps
            .iter()
            .filter(|other| other.tenant == app.tenant)
            .map(|other| other.appid.clone())
            .collect();
        let bound = self
            .ports
            .registry
            .bound_by_unionid(&hash, &tenant_apps, id)
            .await?;
        let mut users: Vec<UserId> = bound.iter().map(|(_, user)| *user).collect();
        users.sort();
        users.dedup();
        // The account is loaded again only when something is to be written.
        match users.as_slice() {
            [] => Ok(state),
            [user] => {
                let record = match self.active_user(*user).await {
                    Ok(record) if record.tenant == app.tenant => record,
                    // A disabled or vanished user is linked to nothing.
                    _ => return Ok(state),
                };
                let linked_from = bound
                    .iter()
                    .find(|(_, u)| u == user)
                    .map(|(account, _)| account.clone());
                let bind = BindRequest {
                    user: record.id,
                    proof: SessionProof::ticket(state.latest_session()),
                    via: BindMethod::UnionidMatch,
                    linked_from,
                };
                let context = self.load(id).await?;
                match self
                    .bind_to(ctx, context, id, bind, async { Ok(Vec::new()) }, None)
                    .await
                {
                    Ok((linked, _)) => {
                        tracing::info!(%id, user = %record.id, "linked by unionid");
                        Ok(linked)
                    }
                    Err(AppError::UserAlreadyBoundInApp | AppError::Account(_)) => {
                        tracing::info!(%id, user = %record.id, "not linked by unionid: the user or the identity is bound otherwise");
                        Ok(self.load(id).await?.state().clone())
                    }
                    Err(other) => Err(other),
                }
            }
            several => {
                tracing::warn!(%id, users = ?several, "not linked by unionid: its bindings in the tenant name several users");
                let command = SocialAccountCommand::DeclineLink {
                    users: several.to_vec(),
                    at: self.now(),
                };
                let context = self.load(id).await?;
                self.commit(ctx, id, context, vec![command]).await
            }
        }
    }
}
