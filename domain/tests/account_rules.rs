//! Given / When / Then scenarios for every rule of the SocialAccount aggregate.

use chrono::{DateTime, Utc};
use cqrs_es::test::TestFramework;
use miniauth_domain::*;

fn account() -> TestFramework<SocialAccount> {
    TestFramework::with(())
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

fn appid() -> AppId {
    AppId::parse("wx4f4bc4dec97d474b").unwrap()
}

fn openid() -> OpenId {
    OpenId::parse("oGZUI0egBJY1zhBYw2KhdUfwVJJE").unwrap()
}

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn sealed_key(n: u64) -> SealedSecret {
    SealedSecret::from_sealed_text(format!("sealed-key-{n}"))
}

fn datum(text: &str) -> SealedDatum {
    SealedDatum::from_sealed_text(format!("sealed:{text}"))
}

fn session(seq: u64) -> SocialAccountEvent {
    SocialAccountEvent::SessionObtained(SessionObtained {
        appid: appid(),
        openid: openid(),
        unionid: None,
        channel: Channel::MiniProgram,
        session_key: Some(sealed_key(seq)),
        session_seq: seq,
        occurred_at: at(seq as i64),
    })
}

fn sessions(n: u64) -> Vec<SocialAccountEvent> {
    (1..=n).map(session).collect()
}

fn bound(id: i64) -> SocialAccountEvent {
    SocialAccountEvent::UserBound(UserBound {
        user_id: user(id),
        via: BindMethod::PhoneMatch,
        imported_from: None,
        linked_from: None,
        occurred_at: at(100),
    })
}

fn bind(proof: SessionProof, id: i64) -> SocialAccountCommand {
    SocialAccountCommand::Bind {
        proof,
        user_id: user(id),
        via: BindMethod::PasswordLogin,
        at: at(200),
    }
}

fn verify_phone(proof: SessionProof) -> SocialAccountCommand {
    SocialAccountCommand::VerifyPhone {
        proof,
        phone: datum("13800138000"),
        country_code: "86".into(),
        via: PhoneSource::EncryptedPayload,
        at: at(200),
    }
}

fn phone_verified() -> SocialAccountEvent {
    SocialAccountEvent::PhoneVerified(PhoneVerified {
        phone: datum("13800138000"),
        country_code: "86".into(),
        via: PhoneSource::EncryptedPayload,
        occurred_at: at(200),
    })
}

#[test]
fn first_login_obtains_session_one() {
    account()
        .given_no_previous_events()
        .when(SocialAccountCommand::ObtainSession {
            appid: appid(),
            openid: openid(),
            unionid: None,
            session_key: sealed_key(1),
            at: at(1),
        })
        .then_expect_events(vec![session(1)]);
}

#[test]
fn each_login_takes_the_next_session_number() {
    account()
        .given(sessions(2))
        .when(SocialAccountCommand::ObtainSession {
            appid: appid(),
            openid: openid(),
            unionid: None,
            session_key: sealed_key(3),
            at: at(3),
        })
        .then_expect_events(vec![session(3)]);
}

#[test]
fn a_session_for_another_identity_is_refused() {
    account()
        .given(sessions(1))
        .when(SocialAccountCommand::ObtainSession {
            appid: appid(),
            openid: OpenId::parse("someone-else").unwrap(),
            unionid: None,
            session_key: sealed_key(2),
            at: at(2),
        })
        .then_expect_error(AccountError::SessionForAnotherIdentity);
}

#[test]
fn a_ticket_of_the_newest_session_binds() {
    account()
        .given(sessions(1))
        .when(bind(SessionProof::ticket(1), 42))
        .then_expect_events(vec![SocialAccountEvent::UserBound(UserBound {
            user_id: user(42),
            via: BindMethod::PasswordLogin,
            imported_from: None,
            linked_from: None,
            occurred_at: at(200),
        })]);
}

#[test]
fn nothing_is_accepted_before_a_login() {
    account()
        .given_no_previous_events()
        .when(bind(SessionProof::ticket(1), 42))
        .then_expect_error(AccountError::NoSession);
}

#[test]
fn a_ticket_for_a_session_never_held_is_refused() {
    account()
        .given(sessions(1))
        .when(bind(SessionProof::ticket(2), 42))
        .then_expect_error(AccountError::TicketUnknownSession);
    account()
        .given(sessions(1))
        .when(bind(SessionProof::ticket(0), 42))
        .then_expect_error(AccountError::TicketUnknownSession);
}

#[test]
fn a_ticket_from_a_superseded_session_is_refused_without_a_payload() {
    account()
        .given(sessions(2))
        .when(bind(SessionProof::ticket(1), 42))
        .then_expect_error(AccountError::TicketSessionSuperseded);
}

#[test]
fn the_wx_login_race_payload_under_the_newest_key_is_accepted() {
    // Ticket from session 1, but wx.login raced ahead: the payload opened under key 2.
    account()
        .given(sessions(2))
        .when(verify_phone(SessionProof::payload(1, 2)))
        .then_expect_events(vec![phone_verified()]);
}

#[test]
fn a_payload_under_the_tickets_own_retained_key_is_accepted() {
    account()
        .given(sessions(2))
        .when(verify_phone(SessionProof::payload(1, 1)))
        .then_expect_events(vec![phone_verified()]);
}

#[test]
fn a_payload_under_a_key_that_is_neither_the_tickets_nor_the_newest_is_refused() {
    account()
        .given(sessions(3))
        .when(verify_phone(SessionProof::payload(1, 2)))
        .then_expect_error(AccountError::SessionKeyNotHeld);
}

#[test]
fn a_ticket_older_than_the_retained_sessions_is_superseded() {
    let n = RETAINED_SESSIONS as u64 + 2;
    account()
        .given(sessions(n))
        .when(verify_phone(SessionProof::payload(1, 1)))
        .then_expect_error(AccountError::TicketSessionSuperseded);
}

#[test]
fn candidate_keys_are_the_tickets_then_the_newest() {
    let mut state = SocialAccount::default();
    for event in sessions(3) {
        cqrs_es::Aggregate::apply(&mut state, event);
    }
    let seqs: Vec<u64> = state
        .candidate_keys(2)
        .unwrap()
        .iter()
        .map(|s| s.seq)
        .collect();
    assert_eq!(seqs, vec![2, 3]);
    let seqs: Vec<u64> = state
        .candidate_keys(3)
        .unwrap()
        .iter()
        .map(|s| s.seq)
        .collect();
    assert_eq!(seqs, vec![3]);
    assert_eq!(
        state.candidate_keys(4).unwrap_err(),
        AccountError::TicketUnknownSession
    );
    assert_eq!(
        state.candidate_keys(3).unwrap()[0].session_key,
        sealed_key(3)
    );
}

#[test]
fn binding_the_same_user_again_changes_nothing() {
    account()
        .given(vec![session(1), bound(42)])
        .when(bind(SessionProof::ticket(1), 42))
        .then_expect_events(vec![]);
}

#[test]
fn at_most_one_user_is_bound_at_a_time() {
    account()
        .given(vec![session(1), bound(42)])
        .when(bind(SessionProof::ticket(1), 7))
        .then_expect_error(AccountError::AlreadyBoundToOtherUser);
}

#[test]
fn unbind_only_when_bound() {
    account()
        .given(sessions(1))
        .when(SocialAccountCommand::Unbind {
            user_id: user(42),
            reason: UnbindReason::UserRequest,
            at: at(300),
        })
        .then_expect_error(AccountError::NotBound);
}

#[test]
fn unbind_names_the_bound_user() {
    account()
        .given(vec![session(1), bound(42)])
        .when(SocialAccountCommand::Unbind {
            user_id: user(7),
            reason: UnbindReason::UserRequest,
            at: at(300),
        })
        .then_expect_error(AccountError::BoundToOtherUser);
}

#[test]
fn unbind_then_rebind_to_another_user() {
    let unbound = SocialAccountEvent::Unbound(Unbound {
        user_id: user(42),
        reason: UnbindReason::UserRequest,
        occurred_at: at(300),
    });
    account()
        .given(vec![session(1), bound(42)])
        .when(SocialAccountCommand::Unbind {
            user_id: user(42),
            reason: UnbindReason::UserRequest,
            at: at(300),
        })
        .then_expect_events(vec![unbound.clone()]);
    account()
        .given(vec![session(1), bound(42), unbound])
        .when(bind(SessionProof::ticket(1), 7))
        .then_expect_events(vec![SocialAccountEvent::UserBound(UserBound {
            user_id: user(7),
            via: BindMethod::PasswordLogin,
            imported_from: None,
            linked_from: None,
            occurred_at: at(200),
        })]);
}

fn sealed_unionid() -> SealedUnionId {
    SealedUnionId {
        hash: "9f".repeat(32),
        sealed: Some(datum("ocMvos6NjeKLIBqg5Mr9QjxrP1FA")),
    }
}

#[test]
fn profile_needs_a_valid_ticket_and_records_its_source() {
    let command = |proof| SocialAccountCommand::AcceptProfile {
        proof,
        nickname: datum("Band"),
        avatar_url: datum("http://a"),
        unionid: Some(sealed_unionid()),
        via: ProfileSource::ClientSupplied,
        at: at(50),
    };
    account()
        .given(sessions(1))
        .when(command(SessionProof::ticket(1)))
        .then_expect_events(vec![SocialAccountEvent::ProfileDecrypted(
            ProfileDecrypted {
                nickname: datum("Band"),
                avatar_url: datum("http://a"),
                unionid: Some(sealed_unionid()),
                via: ProfileSource::ClientSupplied,
                occurred_at: at(50),
            },
        )]);
    account()
        .given(sessions(2))
        .when(command(SessionProof::ticket(1)))
        .then_expect_error(AccountError::TicketSessionSuperseded);
}

#[test]
fn erasure_unbinds_and_forgets_personal_data() {
    let mut history = vec![session(1), phone_verified(), bound(42)];
    account()
        .given(history.clone())
        .when(SocialAccountCommand::ErasePersonalData { at: at(400) })
        .then_expect_events(vec![
            SocialAccountEvent::Unbound(Unbound {
                user_id: user(42),
                reason: UnbindReason::Erasure,
                occurred_at: at(400),
            }),
            SocialAccountEvent::PersonalDataErased(PersonalDataErased {
                occurred_at: at(400),
            }),
        ]);
    history.push(SocialAccountEvent::Unbound(Unbound {
        user_id: user(42),
        reason: UnbindReason::Erasure,
        occurred_at: at(400),
    }));
    history.push(SocialAccountEvent::PersonalDataErased(PersonalDataErased {
        occurred_at: at(400),
    }));
    let mut state = SocialAccount::default();
    for event in history {
        cqrs_es::Aggregate::apply(&mut state, event);
    }
    assert!(!state.has_phone());
    assert_eq!(state.bound_user(), None);
    assert_eq!(state.latest_session(), 1);
}

#[test]
fn erasing_again_records_nothing_until_something_new_is_recorded() {
    let erased = SocialAccountEvent::PersonalDataErased(PersonalDataErased {
        occurred_at: at(400),
    });
    account()
        .given(vec![session(1), phone_verified(), erased.clone()])
        .when(SocialAccountCommand::ErasePersonalData { at: at(500) })
        .then_expect_events(vec![]);
    // A login after the erasure records new personal data: that is erased again.
    account()
        .given(vec![session(1), erased, session(2)])
        .when(SocialAccountCommand::ErasePersonalData { at: at(500) })
        .then_expect_events(vec![SocialAccountEvent::PersonalDataErased(
            PersonalDataErased {
                occurred_at: at(500),
            },
        )]);
}

#[test]
fn the_state_remembers_the_user_it_registered_and_forgets_the_unionid_on_erasure() {
    let profile = SocialAccountEvent::ProfileDecrypted(ProfileDecrypted {
        nickname: datum("Band"),
        avatar_url: datum("http://a"),
        unionid: Some(sealed_unionid()),
        via: ProfileSource::ClientSupplied,
        occurred_at: at(60),
    });
    let registered = SocialAccountEvent::UserBound(UserBound {
        user_id: user(9),
        via: BindMethod::AutoRegistration,
        imported_from: None,
        linked_from: None,
        occurred_at: at(70),
    });
    let unbound = SocialAccountEvent::Unbound(Unbound {
        user_id: user(9),
        reason: UnbindReason::UserRequest,
        occurred_at: at(80),
    });
    let mut state = SocialAccount::default();
    for event in [session(1), profile, registered, unbound] {
        cqrs_es::Aggregate::apply(&mut state, event);
    }
    assert_eq!(state.unionid(), Some(&sealed_unionid()));
    // Unbound since, the identity still registered user 9: erasure will look at it.
    assert_eq!(
        (state.bound_user(), state.registered_user()),
        (None, Some(user(9)))
    );
    cqrs_es::Aggregate::apply(
        &mut state,
        SocialAccountEvent::PersonalDataErased(PersonalDataErased {
            occurred_at: at(90),
        }),
    );
    assert_eq!(state.unionid(), None);
    assert!(!state.has_profile());

    // A user found by phone was not registered by the identity.
    let mut found = SocialAccount::default();
    for event in [session(1), phone_verified(), bound(42)] {
        cqrs_es::Aggregate::apply(&mut found, event);
    }
    assert_eq!(found.registered_user(), None);
}

#[test]
fn state_keeps_only_the_retained_session_keys() {
    let mut state = SocialAccount::default();
    for event in sessions(10) {
        cqrs_es::Aggregate::apply(&mut state, event);
    }
    let json = serde_json::to_string(&state).unwrap();
    assert!(json.contains("sealed-key-10"));
    assert!(!json.contains("sealed-key-1\""));
    assert_eq!(state.event_count(), 10);
}

#[test]
fn a_link_by_unionid_binds_and_names_the_account_it_follows() {
    let source = AccountId::parse("wx00000000000000b2:o-elsewhere").unwrap();
    account()
        .given(vec![session(1)])
        .when(SocialAccountCommand::LinkByUnionid {
            proof: SessionProof::ticket(1),
            user_id: user(7),
            linked_from: source.clone(),
            at: at(200),
        })
        .then_expect_events(vec![SocialAccountEvent::UserBound(UserBound {
            user_id: user(7),
            via: BindMethod::UnionidMatch,
            imported_from: None,
            linked_from: Some(source.clone()),
            occurred_at: at(200),
        })]);
    // Bound to someone else since: refused; to the same user: nothing new.
    account()
        .given(vec![session(1), bound(42)])
        .when(SocialAccountCommand::LinkByUnionid {
            proof: SessionProof::ticket(1),
            user_id: user(7),
            linked_from: source.clone(),
            at: at(200),
        })
        .then_expect_error(AccountError::AlreadyBoundToOtherUser);
    account()
        .given(vec![session(1), bound(42)])
        .when(SocialAccountCommand::LinkByUnionid {
            proof: SessionProof::ticket(1),
            user_id: user(42),
            linked_from: source,
            at: at(200),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_declined_link_is_recorded_only_while_unbound() {
    account()
        .given(vec![session(1)])
        .when(SocialAccountCommand::DeclineLink {
            users: vec![user(3), user(7)],
            at: at(200),
        })
        .then_expect_events(vec![SocialAccountEvent::LinkDeclined(LinkDeclined {
            users: vec![user(3), user(7)],
            occurred_at: at(200),
        })]);
    account()
        .given(vec![session(1), bound(42)])
        .when(SocialAccountCommand::DeclineLink {
            users: vec![user(3), user(7)],
            at: at(200),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_user_bound_without_a_source_serialises_as_before() {
    let json = serde_json::to_value(bound(42)).unwrap();
    assert!(json["UserBound"].get("linked_from").is_none(), "{json}");
}

#[test]
fn a_unionid_that_contradicts_the_one_on_record_is_refused() {
    let known = SealedUnionId {
        hash: "hash-of-the-first".into(),
        sealed: None,
    };
    let other = SealedUnionId {
        hash: "hash-of-another".into(),
        sealed: None,
    };
    let mut first = session(1);
    if let SocialAccountEvent::SessionObtained(e) = &mut first {
        e.unionid = Some(known.clone());
    }
    let login = |unionid: Option<SealedUnionId>| SocialAccountCommand::ObtainSession {
        appid: appid(),
        openid: openid(),
        unionid,
        session_key: sealed_key(2),
        at: at(300),
    };
    account()
        .given(vec![first.clone()])
        .when(login(Some(other.clone())))
        .then_expect_error(AccountError::UnionidMismatch);
    // The same one, or none at all, is a login like any other.
    for unionid in [Some(known.clone()), None] {
        let mut state = SocialAccount::default();
        cqrs_es::Aggregate::apply(&mut state, first.clone());
        assert!(state.decide(login(unionid)).is_ok());
    }
    // A profile payload naming another one: refused too.
    account()
        .given(vec![first.clone()])
        .when(SocialAccountCommand::AcceptProfile {
            proof: SessionProof::ticket(1),
            nickname: datum("n"),
            avatar_url: datum("http://a"),
            unionid: Some(other.clone()),
            via: ProfileSource::EncryptedPayload,
            at: at(300),
        })
        .then_expect_error(AccountError::UnionidMismatch);
    // After an erasure none is on record: a new one is learned.
    let erased = SocialAccountEvent::PersonalDataErased(PersonalDataErased {
        occurred_at: at(200),
    });
    let mut state = SocialAccount::default();
    for event in [first, erased] {
        cqrs_es::Aggregate::apply(&mut state, event);
    }
    assert!(state.decide(login(Some(other))).is_ok());
}

#[test]
fn the_same_declined_link_is_recorded_once() {
    let declined = SocialAccountEvent::LinkDeclined(LinkDeclined {
        users: vec![user(3), user(7)],
        occurred_at: at(200),
    });
    account()
        .given(vec![session(1), declined.clone(), session(2)])
        .when(SocialAccountCommand::DeclineLink {
            users: vec![user(3), user(7)],
            at: at(300),
        })
        .then_expect_events(vec![]);
    // Another set of users is news.
    account()
        .given(vec![session(1), declined, session(2)])
        .when(SocialAccountCommand::DeclineLink {
            users: vec![user(3), user(7), user(9)],
            at: at(300),
        })
        .then_expect_events(vec![SocialAccountEvent::LinkDeclined(LinkDeclined {
            users: vec![user(3), user(7), user(9)],
            occurred_at: at(300),
        })]);
}

fn oauth_login(channel: Channel, seq: i64) -> SocialAccountCommand {
    SocialAccountCommand::ObtainOAuthSession {
        appid: appid(),
        openid: openid(),
        unionid: None,
        channel,
        at: at(seq),
    }
}

fn oauth_session(channel: Channel, seq: u64) -> SocialAccountEvent {
    SocialAccountEvent::SessionObtained(SessionObtained {
        appid: appid(),
        openid: openid(),
        unionid: None,
        channel,
        session_key: None,
        session_seq: seq,
        occurred_at: at(seq as i64),
    })
}

#[test]
fn an_oauth_login_records_its_channel_and_no_session_key() {
    for channel in [
        Channel::OfficialAccount,
        Channel::Website,
        Channel::MobileApp,
    ] {
        account()
            .given_no_previous_events()
            .when(oauth_login(channel, 1))
            .then_expect_events(vec![oauth_session(channel, 1)]);
        account()
            .given(vec![oauth_session(channel, 1)])
            .when(oauth_login(channel, 2))
            .then_expect_events(vec![oauth_session(channel, 2)]);
    }
    // A mini program's login is never recorded without its key.
    account()
        .given_no_previous_events()
        .when(oauth_login(Channel::MiniProgram, 1))
        .then_expect_error(AccountError::ChannelMismatch);
}

#[test]
fn an_identity_keeps_the_channel_it_first_logged_in_through() {
    account()
        .given(vec![oauth_session(Channel::Website, 1)])
        .when(SocialAccountCommand::ObtainSession {
            appid: appid(),
            openid: openid(),
            unionid: None,
            session_key: sealed_key(2),
            at: at(2),
        })
        .then_expect_error(AccountError::ChannelMismatch);
    account()
        .given(sessions(1))
        .when(oauth_login(Channel::OfficialAccount, 2))
        .then_expect_error(AccountError::ChannelMismatch);
    account()
        .given(vec![oauth_session(Channel::Website, 1)])
        .when(oauth_login(Channel::MobileApp, 2))
        .then_expect_error(AccountError::ChannelMismatch);
}

#[test]
fn without_a_session_key_there_is_no_payload_and_no_phone_but_binding_works() {
    let given = vec![oauth_session(Channel::OfficialAccount, 1)];
    let mut state = SocialAccount::default();
    for event in given.clone() {
        cqrs_es::Aggregate::apply(&mut state, event);
    }
    assert_eq!(state.channel(), Channel::OfficialAccount);
    assert!(state.candidate_keys(1).unwrap().is_empty());
    account()
        .given(given.clone())
        .when(verify_phone(SessionProof::ticket(1)))
        .then_expect_error(AccountError::ChannelMismatch);
    let profile = |via| SocialAccountCommand::AcceptProfile {
        proof: SessionProof::ticket(1),
        nickname: datum("Wang"),
        avatar_url: datum("https://a"),
        unionid: None,
        via,
        at: at(5),
    };
    for via in [
        ProfileSource::EncryptedPayload,
        ProfileSource::ClientSupplied,
    ] {
        account()
            .given(given.clone())
            .when(profile(via))
            .then_expect_error(AccountError::ChannelMismatch);
    }
    account()
        .given(given.clone())
        .when(profile(ProfileSource::SnsUserinfo))
        .then_expect_events(vec![SocialAccountEvent::ProfileDecrypted(
            ProfileDecrypted {
                nickname: datum("Wang"),
                avatar_url: datum("https://a"),
                unionid: None,
                via: ProfileSource::SnsUserinfo,
                occurred_at: at(5),
            },
        )]);
    // ...and a mini program's profile never claims to be WeChat's userinfo.
    account()
        .given(sessions(1))
        .when(profile(ProfileSource::SnsUserinfo))
        .then_expect_error(AccountError::ChannelMismatch);
    account()
        .given(given)
        .when(bind(SessionProof::ticket(1), 7))
        .then_expect_events(vec![SocialAccountEvent::UserBound(UserBound {
            user_id: user(7),
            via: BindMethod::PasswordLogin,
            imported_from: None,
            linked_from: None,
            occurred_at: at(200),
        })]);
}

// --- Imported from another system (miniauth import gitegg) -----------------------

fn row(table: &str, id: i64) -> Provenance {
    Provenance {
        system: "gitegg".into(),
        table: table.into(),
        row_id: id,
    }
}

fn import(binding: Option<i64>) -> SocialAccountCommand {
    SocialAccountCommand::Import {
        appid: appid(),
        openid: openid(),
        unionid: None,
        channel: Channel::MiniProgram,
        nickname: Some(datum("Nick")),
        avatar_url: Some(datum("https://example.com/a.png")),
        source: row("t_just_auth_social", 7),
        recorded_there: at(-1000),
        binding: binding.map(|id| ImportedBinding {
            user_id: user(id),
            source: row("t_just_auth_social_user", 9),
            bound_there: at(-900),
        }),
        at: at(500),
    }
}

fn imported() -> SocialAccountEvent {
    SocialAccountEvent::AccountImported(AccountImported {
        appid: appid(),
        openid: openid(),
        unionid: None,
        channel: Channel::MiniProgram,
        nickname: Some(datum("Nick")),
        avatar_url: Some(datum("https://example.com/a.png")),
        source: row("t_just_auth_social", 7),
        imported_at: at(500),
        occurred_at: at(-1000),
    })
}

#[test]
fn a_new_identity_is_imported_with_its_binding_dated_by_the_other_system() {
    account()
        .given_no_previous_events()
        .when(import(Some(42)))
        .then_expect_events(vec![
            imported(),
            SocialAccountEvent::UserBound(UserBound {
                user_id: user(42),
                via: BindMethod::Imported,
                linked_from: None,
                imported_from: Some(row("t_just_auth_social_user", 9)),
                occurred_at: at(-900),
            }),
        ]);
}

#[test]
fn an_identity_with_a_history_imports_nothing() {
    account()
        .given(vec![imported()])
        .when(import(Some(42)))
        .then_expect_events(vec![]);
    account()
        .given(sessions(1))
        .when(import(None))
        .then_expect_events(vec![]);
}

#[test]
fn an_imported_identity_logs_in_with_its_first_session_and_can_be_erased_before() {
    account()
        .given(vec![imported()])
        .when(SocialAccountCommand::ObtainSession {
            appid: appid(),
            openid: openid(),
            unionid: None,
            session_key: sealed_key(1),
            at: at(1),
        })
        .then_expect_events(sessions(1));
    account()
        .given(vec![imported()])
        .when(SocialAccountCommand::ErasePersonalData { at: at(600) })
        .then_expect_events(vec![SocialAccountEvent::PersonalDataErased(
            PersonalDataErased {
                occurred_at: at(600),
            },
        )]);
}

#[test]
fn an_identity_imported_for_an_official_account_is_one_from_its_import_on() {
    let mut state = SocialAccount::default();
    let SocialAccountEvent::AccountImported(event) = imported() else {
        unreachable!()
    };
    cqrs_es::Aggregate::apply(
        &mut state,
        SocialAccountEvent::AccountImported(AccountImported {
            channel: Channel::OfficialAccount,
            ..event
        }),
    );
    assert_eq!(state.channel(), Channel::OfficialAccount);
    assert!(state.imported_at().is_some());
    // Its first login is the Official Account's: an OAuth session, no session key.
    let events = state
        .decide(SocialAccountCommand::ObtainOAuthSession {
            appid: appid(),
            openid: openid(),
            unionid: None,
            channel: Channel::OfficialAccount,
            at: at(1),
        })
        .expect("a login");
    assert_eq!(
        events,
        vec![SocialAccountEvent::SessionObtained(SessionObtained {
            appid: appid(),
            openid: openid(),
            unionid: None,
            channel: Channel::OfficialAccount,
            session_key: None,
            session_seq: 1,
            occurred_at: at(1),
        })]
    );
}
