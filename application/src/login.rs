//! Steps 2–4 of the flow: a login code becomes a session, a ticket, and — for a
//! returning user — tokens at once.

use miniauth_domain::{
    AccountId, AppId, BindMethod, OneTimeCode, OpenId, PersonalField, ProfileSource, SealedUnionId,
    SessionKey, SessionProof, SocialAccount, SocialAccountCommand, UnionId, UserId,
};

use crate::context::RequestContext;
use crate::error::AppError;
use crate::phone::BindRequest;
use crate::ports::{OAuthGrant, SnsUserInfo, ThrottleKey};
use crate::profile::ProfileFields;
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
        let session = self.exchange_code(app, &code).await?;
        let id = AccountId::new(&app.appid, &session.openid);
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
        // WeChat's userinfo is asked once, while the account has no profile.
        let profile = match &session.credential {
            Credential::OAuth(grant) if !context.state().has_profile() => {
                self.userinfo(app, grant).await
            }
            _ => None,
        };
        let learned = profile.as_ref().and_then(|p| p.unionid.clone());
        let unionid = match session.unionid.as_ref().or(learned.as_ref()) {
            Some(unionid) => Some(self.ports.vault.seal_unionid(&id, unionid).await?),
            None => None,
        };
        let command = match &session.credential {
            Credential::SessionKey(key) => SocialAccountCommand::ObtainSession {
                appid: app.appid.clone(),
                openid: session.openid.clone(),
                unionid,
                session_key: self.ports.vault.seal_secret(&id, key).await?,
                at: self.now(),
            },
            Credential::OAuth(_) => SocialAccountCommand::ObtainOAuthSession {
                appid: app.appid.clone(),
                openid: session.openid.clone(),
                unionid,
                channel: app.kind,
                at: self.now(),
            },
        };
        // A returning user's login session starts in the same durable write as the
        // session's event (one commit), once every check above has passed.
        let owner = match &user {
            Some(user) if with_tokens => Some(session_owner(user, Some(app))?),
            _ => None,
        };
        let (mut state, started) = self
            .commit_with(ctx, &id, context, vec![command], owner.as_ref())
            .await?;
        if let Some(profile) = &profile {
            state = self.record_userinfo(ctx, &id, profile, state).await;
        }
        if state.bound_user().is_none() && app.link_by_unionid {
            state = self.link_by_unionid(ctx, app, &id, state).await?;
        }
        let fresh = session.unionid.or(learned);
        self.answer(app, &id, &state, user, started, fresh, with_tokens)
            .await
    }

    /// What a login (or a browser login's result) answers for the account in `state`:
    /// a ticket, and tokens when it is bound and `with_tokens` (spending the ticket).
    /// `user` is the bound user when the caller loaded it already; `started` the login
    /// session a commit started for it; `unionid` the one WeChat just sent, if any (else
    /// the one on record is read back).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn answer(
        &self,
        app: &AppSettings,
        id: &AccountId,
        state: &SocialAccount,
        user: Option<crate::ports::UserRecord>,
        started: Option<crate::service::StartedSession>,
        unionid: Option<UnionId>,
        with_tokens: bool,
    ) -> Result<LoginOutcome, AppError> {
        let tokens = match (state.bound_user(), started) {
            (Some(bound), Some(started)) if started.0.user_id == bound => {
                Some(self.tokens_of(started)?)
            }
            (Some(bound), _) if with_tokens => {
                let user = match user {
                    Some(user) if user.id == bound => user,
                    _ => {
                        let user = self.active_user(bound).await?;
                        ensure_same_tenant(&user, app)?;
                        user
                    }
                };
                Some(self.issue_tokens(&user, Some(app)).await?)
            }
            _ => None,
        };
        // The ticket of an answer with tokens is issued spent: it buys no second
        // session, and marking it so takes no write.
        let (ticket, claims) = self.issue_ticket(&app.appid, state, tokens.is_some())?;
        // WeChat sends the unionid with every login of an app bound to an Open Platform
        // account; an older one is read back from the log while it is not erased.
        let unionid = match (unionid, state.unionid()) {
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
                .unseal_personal(id, PersonalField::UnionId, sealed)
                .await?
                .and_then(|text| UnionId::parse(&text).ok()),
            (None, _) => None,
        };
        Ok(LoginOutcome {
            ticket,
            openid: claims.openid,
            unionid,
            bound_user: state.bound_user(),
            has_profile: state.has_profile(),
            has_phone: state.has_phone(),
            tokens,
        })
    }
}

/// What a login code was exchanged for, whatever the app's kind.
struct Exchanged {
    openid: OpenId,
    unionid: Option<UnionId>,
    credential: Credential,
}

/// A mini program's session key, or an OAuth login's grant. The grant's access token
/// reads the profile at most once and is dropped with the request: nothing keeps it.
enum Credential {
    SessionKey(SessionKey),
    OAuth(OAuthGrant),
}

impl MiniAuth {
    /// Exchanges a login code at the endpoint of the app's kind: code2session for a mini
    /// program, the OAuth code exchange for the others. A snapshot-page user is refused
    /// before anything is written.
    async fn exchange_code(
        &self,
        app: &AppSettings,
        code: &OneTimeCode,
    ) -> Result<Exchanged, AppError> {
        let wechat = &self.ports.wechat;
        if app.kind.has_session_key() {
            let session = wechat.code_to_session(&app.appid, code).await?;
            return Ok(Exchanged {
                openid: session.openid,
                unionid: session.unionid,
                credential: Credential::SessionKey(session.session_key),
            });
        }
        let grant = wechat.oauth_access_token(&app.appid, code).await?;
        if grant.snapshot_user {
            tracing::info!(appid = %app.appid, "refused a snapshot-page user (is_snapshotuser = 1)");
            return Err(AppError::SnapshotUser);
        }
        Ok(Exchanged {
            openid: grant.openid.clone(),
            unionid: grant.unionid.clone(),
            credential: Credential::OAuth(grant),
        })
    }

    /// WeChat's userinfo of an OAuth login, when its scope reads one. The profile is a
    /// courtesy: a failure is logged and the login stands without it.
    async fn userinfo(&self, app: &AppSettings, grant: &OAuthGrant) -> Option<SnsUserInfo> {
        if !grant.reads_userinfo() {
            return None;
        }
        let wechat = &self.ports.wechat;
        match wechat
            .sns_userinfo(&grant.access_token, &grant.openid)
            .await
        {
            Ok(profile) if profile.openid == grant.openid => Some(profile),
            Ok(_) => {
                tracing::warn!(appid = %app.appid, "WeChat's userinfo names another openid than the login; ignored");
                None
            }
            Err(error) => {
                tracing::warn!(appid = %app.appid, %error, "WeChat's userinfo failed; logging in without the profile");
                None
            }
        }
    }

    /// Records WeChat's userinfo as the account's profile. A profile WeChat sent in a
    /// shape miniauth does not accept (or a failure to record it) is logged and
    /// skipped: the login stands without it.
    async fn record_userinfo(
        &self,
        ctx: &RequestContext,
        id: &AccountId,
        profile: &SnsUserInfo,
        state: SocialAccount,
    ) -> SocialAccount {
        let recorded = async {
            let nickname = crate::profile::check_nickname(&profile.nickname)?;
            let avatar_url = if profile.avatar_url.is_empty() {
                String::new()
            } else {
                crate::profile::check_avatar_url(&profile.avatar_url)?
            };
            let fields = ProfileFields {
                nickname: &nickname,
                avatar_url: &avatar_url,
                unionid: None,
                via: ProfileSource::SnsUserinfo,
            };
            let context = self.load(id).await?;
            let proof = SessionProof::ticket(context.state().latest_session());
            self.record_profile(ctx, id, context, proof, fields).await
        };
        match recorded.await {
            Ok(after) => after,
            Err(error) => {
                tracing::warn!(%id, %error, "WeChat's userinfo was not recorded as the profile");
                state
            }
        }
    }

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
