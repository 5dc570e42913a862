//! Steps 6–7: a profile, from the legacy encrypted payload or from the current
//! `chooseAvatar` + nickname input.

use miniauth_domain::crypto::{open_user_info, verify_raw_data_signature, EncryptedPayload};
use miniauth_domain::{
    AccountId, InvalidValue, PayloadError, PersonalField, ProfileSource, SessionProof,
    SocialAccount, SocialAccountCommand, UnionId,
};

use crate::context::RequestContext;
use crate::error::AppError;
use crate::ports::LoadedAccount;
use crate::service::MiniAuth;
use crate::settings::limits;

/// A profile as the front end sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileInput {
    /// Legacy `getUserInfo`: signed rawData and the encrypted payload.
    Encrypted {
        /// The non-sensitive JSON.
        raw_data: String,
        /// hex(sha1(rawData + session_key)).
        signature: String,
        /// base64 ciphertext.
        encrypted_data: String,
        /// base64 iv.
        iv: String,
    },
    /// Current flow: what the user picked with `chooseAvatar` and typed as nickname.
    ClientSupplied {
        /// The nickname.
        nickname: String,
        /// The avatar URL.
        avatar_url: String,
    },
}

/// The profile as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileOutcome {
    /// The nickname.
    pub nickname: String,
    /// The avatar URL.
    pub avatar_url: String,
}

pub(crate) fn check_nickname(nickname: &str) -> Result<String, InvalidValue> {
    let nickname = nickname.trim();
    if nickname.is_empty() || nickname.chars().count() > limits::NICKNAME_CHARS {
        return Err(InvalidValue::new("nickname", "must be 1 to 64 characters"));
    }
    if nickname.chars().any(char::is_control) {
        return Err(InvalidValue::new(
            "nickname",
            "must not contain control characters",
        ));
    }
    Ok(nickname.to_owned())
}

/// A rawData signature is hex(sha1(...)): 40 hex digits. Anything else is a front-end
/// bug worth naming, not a mismatch.
fn check_signature_shape(signature: &str) -> Result<(), InvalidValue> {
    let signature = signature.trim();
    if signature.len() == 40 && signature.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(InvalidValue::new(
            "signature",
            "must be 40 hex digits (sha1)",
        ))
    }
}

pub(crate) fn check_avatar_url(url: &str) -> Result<String, InvalidValue> {
    let url = url.trim();
    let scheme_ok =
        url.starts_with("https://") || url.starts_with("http://") || url.starts_with("wxfile://");
    if !scheme_ok || url.len() > limits::AVATAR_URL_BYTES || url.chars().any(char::is_whitespace) {
        return Err(InvalidValue::new(
            "avatar_url",
            "must be an http(s) or wxfile URL of at most 1024 bytes",
        ));
    }
    Ok(url.to_owned())
}

/// A profile to record, checked already.
pub(crate) struct ProfileFields<'a> {
    pub nickname: &'a str,
    pub avatar_url: &'a str,
    pub unionid: Option<&'a UnionId>,
    pub via: ProfileSource,
}

impl MiniAuth {
    /// Seals a checked profile with the account's data key and records it under `proof`.
    pub(crate) async fn record_profile(
        &self,
        ctx: &RequestContext,
        account: &AccountId,
        context: LoadedAccount,
        proof: SessionProof,
        fields: ProfileFields<'_>,
    ) -> Result<SocialAccount, AppError> {
        let vault = &self.ports.vault;
        let unionid = match fields.unionid {
            Some(unionid) => Some(vault.seal_unionid(account, unionid).await?),
            None => None,
        };
        let command = SocialAccountCommand::AcceptProfile {
            proof,
            nickname: vault
                .seal_personal(account, PersonalField::Nickname, fields.nickname)
                .await?,
            avatar_url: vault
                .seal_personal(account, PersonalField::AvatarUrl, fields.avatar_url)
                .await?,
            unionid,
            via: fields.via,
            at: self.now(),
        };
        self.commit(ctx, account, context, vec![command]).await
    }

    /// Records a profile: the encrypted payload is opened under a session key the
    /// account holds, its signature and watermark checked; plain fields are validated.
    pub async fn submit_profile(
        &self,
        ctx: &RequestContext,
        appid: &str,
        ticket: &str,
        input: ProfileInput,
    ) -> Result<ProfileOutcome, AppError> {
        let opened = self.open_ticket(appid, ticket)?;
        opened.require_session_key()?;
        let context = self.load(&opened.account).await?;
        let state = context.state().clone();
        let seq = opened.claims.session_seq;
        let now = self.now();
        let (nickname, avatar_url, unionid, via, proof) = match input {
            ProfileInput::Encrypted {
                raw_data,
                signature,
                encrypted_data,
                iv,
            } => {
                check_signature_shape(&signature)?;
                if raw_data.len() > limits::RAW_DATA_BYTES {
                    return Err(InvalidValue::new("raw_data", "must be at most 8 KiB").into());
                }
                let app = opened.app;
                let encrypted = EncryptedPayload::parse(&encrypted_data, &iv)?;
                let openid = opened.claims.openid.as_str();
                // The signature is checked first, under each key tried: a payload is
                // decrypted only when its rawData was signed with that key. Every cause
                // of failure, the signature's included, is one rejection to the client.
                let (payload, proof, _) = self
                    .open_payload(ctx, &opened, &state, |key| {
                        verify_raw_data_signature(&raw_data, &signature, key)?;
                        let payload =
                            open_user_info(key, &encrypted, &app.appid, app.watermark, now)?;
                        match payload.open_id.as_deref() {
                            Some(other) if other != openid => Err(PayloadError::OpenIdMismatch),
                            _ => Ok(payload),
                        }
                    })
                    .await?;
                let unionid = payload
                    .union_id
                    .as_deref()
                    .map(UnionId::parse)
                    .transpose()?;
                (
                    check_nickname(&payload.nick_name)?,
                    check_avatar_url(&payload.avatar_url)?,
                    unionid,
                    ProfileSource::EncryptedPayload,
                    proof,
                )
            }
            ProfileInput::ClientSupplied {
                nickname,
                avatar_url,
            } => (
                check_nickname(&nickname)?,
                check_avatar_url(&avatar_url)?,
                None,
                ProfileSource::ClientSupplied,
                SessionProof::ticket(seq),
            ),
        };
        // Fail on a stale ticket before sealing anything.
        state.check_proof(proof)?;
        let learned = state.unionid().is_none() && unionid.is_some();
        let fields = ProfileFields {
            nickname: &nickname,
            avatar_url: &avatar_url,
            unionid: unionid.as_ref(),
            via,
        };
        let after = self
            .record_profile(ctx, &opened.account, context, proof, fields)
            .await?;
        // A unionid learned now links as at a login (docs/channels.md): the next login
        // of the identity is then a returning user's.
        if learned && after.bound_user().is_none() && opened.app.link_by_unionid {
            self.link_by_unionid(ctx, opened.app, &opened.account, after)
                .await?;
        }
        Ok(ProfileOutcome {
            nickname,
            avatar_url,
        })
    }
}
