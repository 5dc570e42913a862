//! The `SocialAccount` aggregate: one WeChat identity (appid, openid) and its sessions,
//! profile, phone and binding.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::commands::{SessionProof, SocialAccountCommand};
use crate::error::AccountError;
use crate::events::{
    AccountImported, LinkDeclined, PersonalDataErased, PhoneVerified, ProfileDecrypted,
    SessionObtained, SocialAccountEvent, UnbindReason, Unbound, UserBound,
};
use crate::events::{BindMethod, ProfileSource};
use crate::ids::{AccountId, AppId, OpenId, UserId};
use crate::sealed::{SealedDatum, SealedSecret, SealedUnionId};

/// How many recent sessions' keys the state keeps. A ticket older than these is
/// superseded whatever it carries; the newest is what WeChat's client holds.
pub const RETAINED_SESSIONS: usize = 4;

/// A session the account holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Its sequence number.
    pub seq: u64,
    /// Its key, sealed.
    pub session_key: SealedSecret,
}

/// The state of one WeChat identity in one app, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SocialAccount {
    appid: Option<AppId>,
    openid: Option<OpenId>,
    unionid: Option<SealedUnionId>,
    /// The kind of app its logins come through (absent in states built before channels
    /// existed: a mini program's).
    #[serde(default)]
    channel: Channel,
    latest_seq: u64,
    sessions: VecDeque<SessionRecord>,
    bound_user: Option<UserId>,
    nickname: Option<SealedDatum>,
    avatar_url: Option<SealedDatum>,
    phone: Option<(SealedDatum, String)>,
    /// The user this identity registered (bound by auto-registration), kept after an
    /// unbind: erasure decides by it whether that user's copies go too.
    #[serde(default)]
    registered_user: Option<UserId>,
    /// Whether the newest event is the erasure: nothing was recorded since, so another
    /// erasure has nothing to erase.
    #[serde(default)]
    erased: bool,
    /// The users of the newest declined link, until a binding: a login that would decline
    /// the same again records nothing new.
    #[serde(default)]
    declined: Vec<UserId>,
    /// When the identity was imported from another system, if it was.
    #[serde(default)]
    imported_at: Option<DateTime<Utc>>,
    events: u64,
}

impl SocialAccount {
    /// The account's id, once it has logged in.
    pub fn id(&self) -> Option<AccountId> {
        Some(AccountId::new(self.appid.as_ref()?, self.openid.as_ref()?))
    }

    /// The openid, once it has logged in.
    pub fn openid(&self) -> Option<&OpenId> {
        self.openid.as_ref()
    }

    /// The unionid (hashed and sealed), if WeChat ever revealed it and it was not
    /// erased since.
    pub fn unionid(&self) -> Option<&SealedUnionId> {
        self.unionid.as_ref()
    }

    /// The kind of app the identity logs in through.
    pub fn channel(&self) -> Channel {
        self.channel
    }

    /// The user this identity registered by its verified phone, if any (even if
    /// unbound since).
    pub fn registered_user(&self) -> Option<UserId> {
        self.registered_user
    }

    /// When the identity was imported from another system (`AccountImported`), if it
    /// was.
    pub fn imported_at(&self) -> Option<DateTime<Utc>> {
        self.imported_at
    }

    /// The newest session's sequence number (0 before the first login).
    pub fn latest_session(&self) -> u64 {
        self.latest_seq
    }

    /// The user the identity is bound to.
    pub fn bound_user(&self) -> Option<UserId> {
        self.bound_user
    }

    /// Whether a profile was accepted (and not erased since).
    pub fn has_profile(&self) -> bool {
        self.nickname.is_some()
    }

    /// Whether a phone was verified (and not erased since).
    pub fn has_phone(&self) -> bool {
        self.phone.is_some()
    }

    /// The sealed nickname and avatar URL, if any.
    pub fn profile(&self) -> Option<(&SealedDatum, &SealedDatum)> {
        Some((self.nickname.as_ref()?, self.avatar_url.as_ref()?))
    }

    /// The sealed phone and its country code, if any.
    pub fn phone(&self) -> Option<(&SealedDatum, &str)> {
        self.phone.as_ref().map(|(p, c)| (p, c.as_str()))
    }

    /// How many events built this state.
    pub fn event_count(&self) -> u64 {
        self.events
    }

    /// The session keys a payload sent with a ticket of `ticket_session` may be
    /// encrypted under, in the order to try them: the ticket's own (while retained),
    /// then the newest. Fails when the ticket cannot belong to this account.
    pub fn candidate_keys(&self, ticket_session: u64) -> Result<Vec<&SessionRecord>, AccountError> {
        self.check_ticket_session(ticket_session)?;
        let mut keys: Vec<&SessionRecord> = self
            .sessions
            .iter()
            .filter(|s| s.seq == ticket_session)
            .collect();
        if ticket_session != self.latest_seq {
            keys.extend(self.sessions.iter().filter(|s| s.seq == self.latest_seq));
        }
        Ok(keys)
    }

    fn check_ticket_session(&self, ticket_session: u64) -> Result<(), AccountError> {
        if self.latest_seq == 0 {
            return Err(AccountError::NoSession);
        }
        if ticket_session == 0 || ticket_session > self.latest_seq {
            return Err(AccountError::TicketUnknownSession);
        }
        Ok(())
    }

    fn is_retained(&self, seq: u64) -> bool {
        self.sessions.iter().any(|s| s.seq == seq)
    }

    /// The binding rule, however it was asked for: the session must be the request's,
    /// binding the bound user again changes nothing, another user is refused.
    fn bind(
        &self,
        proof: SessionProof,
        user_id: UserId,
        via: BindMethod,
        linked_from: Option<AccountId>,
        at: DateTime<Utc>,
    ) -> Result<Vec<SocialAccountEvent>, AccountError> {
        self.check_proof(proof)?;
        match self.bound_user {
            Some(bound) if bound == user_id => Ok(vec![]),
            Some(_) => Err(AccountError::AlreadyBoundToOtherUser),
            None => Ok(vec![SocialAccountEvent::UserBound(UserBound {
                user_id,
                via,
                linked_from,
                imported_from: None,
                occurred_at: at,
            })]),
        }
    }

    /// A unionid WeChat reveals must be the one on record, if any (a new one is learned;
    /// after an erasure none is on record).
    pub fn check_unionid(&self, unionid: Option<&SealedUnionId>) -> Result<(), AccountError> {
        match (unionid, &self.unionid) {
            (Some(new), Some(known)) if new.hash != known.hash => {
                Err(AccountError::UnionidMismatch)
            }
            _ => Ok(()),
        }
    }

    /// The session rule: a ticket speaks for its own session while it is the newest;
    /// an older ticket is accepted only with a payload that opened under the ticket's
    /// own (retained) key or under the newest key (the `wx.login` race).
    pub fn check_proof(&self, proof: SessionProof) -> Result<(), AccountError> {
        self.check_ticket_session(proof.ticket_session)?;
        match proof.payload_session {
            None if proof.ticket_session == self.latest_seq => Ok(()),
            None => Err(AccountError::TicketSessionSuperseded),
            Some(used) if used == self.latest_seq => Ok(()),
            Some(used) if used == proof.ticket_session && self.is_retained(used) => Ok(()),
            Some(used) if used == proof.ticket_session => {
                Err(AccountError::TicketSessionSuperseded)
            }
            Some(_) => Err(AccountError::SessionKeyNotHeld),
        }
    }

    /// A login's session, of `channel`: for this identity, in its channel, with the
    /// unionid on record if it names one.
    fn obtain_session(
        &self,
        appid: AppId,
        openid: OpenId,
        unionid: Option<SealedUnionId>,
        channel: Channel,
        session_key: Option<SealedSecret>,
        at: DateTime<Utc>,
    ) -> Result<Vec<SocialAccountEvent>, AccountError> {
        let same_identity = self.appid.as_ref().is_none_or(|a| *a == appid)
            && self.openid.as_ref().is_none_or(|o| *o == openid);
        if !same_identity {
            return Err(AccountError::SessionForAnotherIdentity);
        }
        if self.latest_seq > 0 && self.channel != channel {
            return Err(AccountError::ChannelMismatch);
        }
        self.check_unionid(unionid.as_ref())?;
        Ok(vec![SocialAccountEvent::SessionObtained(SessionObtained {
            appid,
            openid,
            unionid,
            channel,
            session_key,
            session_seq: self.latest_seq + 1,
            occurred_at: at,
        })])
    }

    /// Decides what a command changes, without changing anything.
    pub fn decide(
        &self,
        command: SocialAccountCommand,
    ) -> Result<Vec<SocialAccountEvent>, AccountError> {
        use SocialAccountCommand as C;
        use SocialAccountEvent as E;
        match command {
            C::ObtainSession {
                appid,
                openid,
                unionid,
                session_key,
                at,
            } => self.obtain_session(
                appid,
                openid,
                unionid,
                Channel::MiniProgram,
                Some(session_key),
                at,
            ),
            C::ObtainOAuthSession {
                appid,
                openid,
                unionid,
                channel,
                at,
            } => {
                // A mini program's login always has its session key.
                if channel.has_session_key() {
                    return Err(AccountError::ChannelMismatch);
                }
                self.obtain_session(appid, openid, unionid, channel, None, at)
            }
            C::AcceptProfile {
                proof,
                nickname,
                avatar_url,
                unionid,
                via,
                at,
            } => {
                // WeChat's userinfo is the profile of the channels without a session
                // key; the mini program's profile comes from the mini program.
                if (via == ProfileSource::SnsUserinfo) == self.channel.has_session_key() {
                    return Err(AccountError::ChannelMismatch);
                }
                self.check_proof(proof)?;
                self.check_unionid(unionid.as_ref())?;
                Ok(vec![E::ProfileDecrypted(ProfileDecrypted {
                    nickname,
                    avatar_url,
                    unionid,
                    via,
                    occurred_at: at,
                })])
            }
            C::VerifyPhone {
                proof,
                phone,
                country_code,
                via,
                at,
            } => {
                // The phone comes from a mini program (code or payload).
                if !self.channel.has_session_key() {
                    return Err(AccountError::ChannelMismatch);
                }
                self.check_proof(proof)?;
                Ok(vec![E::PhoneVerified(PhoneVerified {
                    phone,
                    country_code,
                    via,
                    occurred_at: at,
                })])
            }
            C::Bind {
                proof,
                user_id,
                via,
                at,
            } => self.bind(proof, user_id, via, None, at),
            C::LinkByUnionid {
                proof,
                user_id,
                linked_from,
                at,
            } => self.bind(
                proof,
                user_id,
                BindMethod::UnionidMatch,
                Some(linked_from),
                at,
            ),
            // Bound since (a concurrent bind won): nothing was declined. Declined for the
            // same users already: the history says so once, not at every login.
            C::DeclineLink { .. } if self.bound_user.is_some() => Ok(vec![]),
            C::DeclineLink { users, .. } if users == self.declined => Ok(vec![]),
            C::DeclineLink { users, at } => Ok(vec![E::LinkDeclined(LinkDeclined {
                users,
                occurred_at: at,
            })]),
            C::Unbind {
                user_id,
                reason,
                at,
            } => match self.bound_user {
                None => Err(AccountError::NotBound),
                Some(bound) if bound != user_id => Err(AccountError::BoundToOtherUser),
                Some(_) => Ok(vec![E::Unbound(Unbound {
                    user_id,
                    reason,
                    occurred_at: at,
                })]),
            },
            C::Import {
                appid,
                openid,
                unionid,
                channel,
                nickname,
                avatar_url,
                source,
                recorded_there,
                binding,
                at,
            } => {
                // Idempotent: an identity with any history (imported before, or known
                // to miniauth already) imports nothing and is never rewritten.
                if self.events > 0 {
                    return Ok(Vec::new());
                }
                let mut events = vec![E::AccountImported(AccountImported {
                    appid,
                    openid,
                    unionid,
                    channel,
                    nickname,
                    avatar_url,
                    source,
                    imported_at: at,
                    occurred_at: recorded_there,
                })];
                if let Some(binding) = binding {
                    events.push(E::UserBound(UserBound {
                        user_id: binding.user_id,
                        via: BindMethod::Imported,
                        linked_from: None,
                        imported_from: Some(binding.source),
                        occurred_at: binding.bound_there,
                    }));
                }
                Ok(events)
            }
            C::ErasePersonalData { at } => {
                // An imported identity has personal data before its first login.
                if self.latest_seq == 0 && self.imported_at.is_none() {
                    return Err(AccountError::NoSession);
                }
                if self.erased {
                    // Nothing was recorded since the last erasure (and it unbound).
                    return Ok(Vec::new());
                }
                let mut events = Vec::new();
                if let Some(user_id) = self.bound_user {
                    events.push(E::Unbound(Unbound {
                        user_id,
                        reason: UnbindReason::Erasure,
                        occurred_at: at,
                    }));
                }
                events.push(E::PersonalDataErased(PersonalDataErased {
                    occurred_at: at,
                }));
                Ok(events)
            }
        }
    }
}

impl Aggregate for SocialAccount {
    const TYPE: &'static str = "SocialAccount";
    type Command = SocialAccountCommand;
    type Event = SocialAccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use SocialAccountEvent as E;
        self.events += 1;
        self.erased = matches!(event, E::PersonalDataErased(_));
        match event {
            E::SessionObtained(e) => {
                self.appid = Some(e.appid);
                self.openid = Some(e.openid);
                if e.unionid.is_some() {
                    self.unionid = e.unionid;
                }
                self.latest_seq = e.session_seq;
                self.channel = e.channel;
                // The channels without a session key keep no session record: no
                // payload can ever be opened under one of theirs.
                if let Some(session_key) = e.session_key {
                    self.sessions.push_back(SessionRecord {
                        seq: e.session_seq,
                        session_key,
                    });
                }
                while self.sessions.len() > RETAINED_SESSIONS {
                    self.sessions.pop_front();
                }
            }
            E::ProfileDecrypted(e) => {
                if e.unionid.is_some() {
                    self.unionid = e.unionid;
                }
                self.nickname = Some(e.nickname);
                self.avatar_url = Some(e.avatar_url);
            }
            E::PhoneVerified(e) => self.phone = Some((e.phone, e.country_code)),
            E::UserBound(e) => {
                self.declined.clear();
                if e.via == BindMethod::AutoRegistration {
                    self.registered_user = Some(e.user_id);
                }
                self.bound_user = Some(e.user_id);
            }
            E::Unbound(_) => self.bound_user = None,
            E::LinkDeclined(e) => self.declined = e.users,
            E::AccountImported(e) => {
                self.appid = Some(e.appid);
                self.openid = Some(e.openid);
                self.unionid = e.unionid;
                self.channel = e.channel;
                self.nickname = e.nickname;
                self.avatar_url = e.avatar_url;
                self.imported_at = Some(e.imported_at);
            }
            E::PersonalDataErased(_) => {
                self.unionid = None;
                self.nickname = None;
                self.avatar_url = None;
                self.phone = None;
            }
        }
    }
}
