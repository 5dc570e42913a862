//! Steps 8–10: a verified phone, then the binding it leads to — a match with an
//! existing user, or a registration when the app's policy allows it.

use std::future::Future;

use miniauth_domain::crypto::{open_phone, EncryptedPayload};
use miniauth_domain::{
    AccountId, BindMethod, OneTimeCode, PersonalField, PhoneNumber, PhoneSource, SessionProof,
    SocialAccount, SocialAccountCommand, UserId,
};

use crate::context::RequestContext;
use crate::error::AppError;
use crate::ports::{Chain, LoadedAccount, NewUser, Registration, SessionOwner, UserRecord};
use crate::service::{
    ensure_active, ensure_same_tenant, session_owner, MiniAuth, StartedSession, Tokens,
};
use crate::settings::{AppSettings, RegistrationPolicy};

/// Who to bind, on which proof of session, and how.
pub(crate) struct BindRequest {
    pub user: UserId,
    pub proof: SessionProof,
    pub via: BindMethod,
    /// For a link by unionid: the account whose binding this one follows.
    pub linked_from: Option<AccountId>,
}

/// A phone as the front end sends it. `Debug` shows which kind, not the code or
/// the payload.
#[derive(Clone, PartialEq, Eq)]
pub enum PhoneInput {
    /// Current flow: the phone button's one-time code.
    Code(String),
    /// Legacy flow: encrypted under the session key.
    Encrypted {
        /// base64 ciphertext.
        encrypted_data: String,
        /// base64 iv.
        iv: String,
    },
}

impl std::fmt::Debug for PhoneInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(_) => f.write_str("PhoneInput::Code(<redacted>)"),
            Self::Encrypted { .. } => f.write_str("PhoneInput::Encrypted(<redacted>)"),
        }
    }
}

/// What verifying a phone led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneOutcome {
    /// The user the identity is bound to now.
    pub user_id: UserId,
    /// Whether that user was registered by this request.
    pub registered: bool,
    /// Tokens for that user.
    pub tokens: Tokens,
}

impl MiniAuth {
    /// Verifies the phone (phone code via WeChat, or the legacy payload under a key the
    /// account holds, watermark checked), then binds: to the user with that phone, or to
    /// a user registered from it if the policy is `auto`. Policy refusals write nothing.
    pub async fn verify_phone(
        &self,
        ctx: &RequestContext,
        appid: &str,
        ticket: &str,
        input: PhoneInput,
    ) -> Result<PhoneOutcome, AppError> {
        let opened = self.open_ticket_to_spend(appid, ticket)?;
        opened.require_session_key()?;
        let app = opened.app;
        let id = opened.account.clone();
        let seq = opened.claims.session_seq;
        let context = self.load(&id).await?;
        let state = context.state().clone();
        let now = self.now();
        // Under `closed` an unbound identity can only bind with a password: refuse
        // before spending a billed phone verification.
        if state.bound_user().is_none() && app.registration == RegistrationPolicy::Closed {
            return Err(AppError::RegistrationClosed);
        }
        let (phone, via, proof) = match input {
            PhoneInput::Code(code) => {
                let code = OneTimeCode::parse("code", &code)?;
                let proof = SessionProof::ticket(seq);
                // Phone verification is billed: refuse a stale ticket before spending it.
                state.check_proof(proof)?;
                let verified = self
                    .ports
                    .wechat
                    .phone_number(&app.appid, &code, &opened.claims.openid)
                    .await?;
                verified.watermark.check(&app.appid, app.watermark, now)?;
                (verified.phone, PhoneSource::PhoneCode, proof)
            }
            PhoneInput::Encrypted { encrypted_data, iv } => {
                let encrypted = EncryptedPayload::parse(&encrypted_data, &iv)?;
                let (payload, proof, _) = self
                    .open_payload(ctx, &opened, &state, |key| {
                        open_phone(key, &encrypted, &app.appid, app.watermark, now)
                    })
                    .await?;
                let phone = PhoneNumber::new(&payload.pure_phone_number, &payload.country_code)?;
                (phone, PhoneSource::EncryptedPayload, proof)
            }
        };
        state.check_proof(proof)?;
        // Sealing creates the account's data key: it comes after every check, so that a
        // refused phone leaves nothing behind.
        let verify = async {
            Ok(vec![SocialAccountCommand::VerifyPhone {
                proof,
                phone: self
                    .ports
                    .vault
                    .seal_personal(&id, PersonalField::Phone, phone.pure())
                    .await?,
                country_code: phone.country_code().to_owned(),
                via,
                at: now,
            }])
        };

        if let Some(user_id) = state.bound_user() {
            // Already bound: record the phone, keep the binding, log the user in.
            let user = self.active_user(user_id).await?;
            ensure_same_tenant(&user, app)?;
            // One ticket, one token-issuing step: a replay of this request (a logged
            // GitEgg query string) writes and issues nothing.
            let owner = session_owner(&user, Some(app))?;
            self.spend_ticket(&opened.claims).await?;
            let commands = verify.await?;
            // The phone and the login session in one commit.
            let tokens = match self
                .commit_with(ctx, &id, context, commands, Some(&owner))
                .await?
            {
                (_, Some(started)) => self.tokens_of(started)?,
                (_, None) => self.issue_tokens(&user, Some(app)).await?,
            };
            return Ok(PhoneOutcome {
                user_id,
                registered: false,
                tokens,
            });
        }

        let (user, registered) = self.user_for_phone(app, &id, &state, &phone).await?;
        if let Err(used) = self.spend_ticket(&opened.claims).await {
            if registered {
                self.discard_registration(user.id).await;
            }
            return Err(used);
        }
        let via = if registered {
            BindMethod::AutoRegistration
        } else {
            BindMethod::PhoneMatch
        };
        let bind = BindRequest {
            linked_from: None,
            user: user.id,
            proof,
            via,
        };
        // The phone, the binding and the login session in one commit.
        let outcome = match session_owner(&user, Some(app)) {
            Ok(owner) => {
                self.bind_to(ctx, context, &id, bind, verify, Some(&owner))
                    .await
            }
            Err(refused) => Err(refused),
        };
        if outcome.is_err() && registered {
            self.discard_registration(user.id).await;
        }
        let tokens = match outcome?.1 {
            Some(started) => self.tokens_of(started)?,
            None => self.issue_tokens(&user, Some(app)).await?,
        };
        Ok(PhoneOutcome {
            user_id: user.id,
            registered,
            tokens,
        })
    }

    /// The user a verified phone leads to under the app's policy, and whether it was
    /// registered just now.
    async fn user_for_phone(
        &self,
        app: &AppSettings,
        id: &AccountId,
        state: &SocialAccount,
        phone: &PhoneNumber,
    ) -> Result<(UserRecord, bool), AppError> {
        if app.registration == RegistrationPolicy::Closed {
            return Err(AppError::RegistrationClosed);
        }
        if let Some(user) = self.ports.users.find_by_phone(&app.tenant, phone).await? {
            ensure_active(&user)?;
            return Ok((user, false));
        }
        if app.registration == RegistrationPolicy::ExistingPhoneOnly {
            return Err(AppError::PhoneNotRegistered);
        }
        let (nickname, avatar_url) = match state.profile() {
            Some((nickname, avatar)) => (
                self.ports
                    .vault
                    .unseal_personal(id, PersonalField::Nickname, nickname)
                    .await?,
                self.ports
                    .vault
                    .unseal_personal(id, PersonalField::AvatarUrl, avatar)
                    .await?,
            ),
            None => (None, None),
        };
        let new_user = NewUser {
            tenant: app.tenant.clone(),
            mobile: phone.clone(),
            nickname,
            avatar_url,
        };
        match self.ports.users.register(new_user).await? {
            Registration::Created(user) => Ok((user, true)),
            // A concurrent registration of the same number won: bind to that user.
            Registration::PhoneTaken => {
                let user = self
                    .ports
                    .users
                    .find_by_phone(&app.tenant, phone)
                    .await?
                    .ok_or_else(|| AppError::Internal("phone taken but no user has it".into()))?;
                ensure_active(&user)?;
                Ok((user, false))
            }
        }
    }

    async fn discard_registration(&self, user: UserId) {
        if let Err(error) = self.ports.users.discard_unbound(user).await {
            tracing::warn!(error = %Chain(&error), %user, "could not discard a user whose binding failed");
        }
    }

    /// Claims the binding in the registry, then commits the commands `before` yields
    /// (awaited only once the claim holds) followed by the bind, in one append; releases
    /// the claim if anything after it fails.
    pub(crate) async fn bind_to(
        &self,
        ctx: &RequestContext,
        context: LoadedAccount,
        id: &AccountId,
        bind: BindRequest,
        before: impl Future<Output = Result<Vec<SocialAccountCommand>, AppError>>,
        session: Option<&SessionOwner>,
    ) -> Result<(SocialAccount, Option<StartedSession>), AppError> {
        let claim = self
            .ports
            .registry
            .claim(&id.appid(), &id.openid(), bind.user)
            .await?;
        let result = async {
            let mut commands = before.await?;
            commands.push(match bind.linked_from {
                Some(linked_from) => SocialAccountCommand::LinkByUnionid {
                    proof: bind.proof,
                    user_id: bind.user,
                    linked_from,
                    at: self.now(),
                },
                None => SocialAccountCommand::Bind {
                    proof: bind.proof,
                    user_id: bind.user,
                    via: bind.via,
                    at: self.now(),
                },
            });
            self.commit_with(ctx, id, context, commands, session).await
        }
        .await;
        if result.is_err() {
            self.release_if_new(claim, id, bind.user).await;
        }
        result
    }
}
