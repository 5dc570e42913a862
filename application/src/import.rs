//! The migration from GitEgg (`miniauth import gitegg`): what of a GitEgg database maps
//! to what in miniauth, which rows are skipped and why, and how a re-run stays
//! idempotent. The GitEgg database is read through [`GiteggSource`], miniauth's store
//! written through [`ImportTarget`] — both ports, so the rules here know neither SQL.
//!
//! | GitEgg | miniauth |
//! | --- | --- |
//! | `t_just_auth_social` of a mapped [`WechatSource`] | a `SocialAccount` of the source's app, `AccountImported` with the app's channel: openid, unionid, nickname, avatar (sealed) |
//! | `t_just_auth_social_user` | `UserBound` with `via = imported`, `imported_from` naming the row |
//! | `t_sys_user` | a user of the mapped tenant with the same id: account, mobile, nickname, status, BCrypt password hash as is |
//!
//! GitEgg's rows name a JustAuth `source`, not an app: [`ImportOptions::sources`] says
//! which configured app each source's rows go to (`WECHAT_MINI_APP` → a mini program,
//! `WECHAT_MP` → an Official Account, `WECHAT_OPEN` → a website or a mobile App). Rows
//! of a source without an app are skipped; Work WeChat's sources cannot be mapped (their
//! ids are not WeChat openids). One GitEgg user bound through several sources becomes
//! one miniauth user with a binding in each app.
//!
//! Each event is dated by its GitEgg row (`create_time`, else `update_time`); the
//! metadata's `actor` is `import`, its `recorded_at` the time of the run.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use miniauth_domain::{
    AccountId, AppId, Channel, ImportedBinding, OpenId, PhoneNumber, Provenance, SealedDatum,
    SealedUnionId, SocialAccount, SocialAccountCommand, SocialAccountEvent, TenantId, UnionId,
    UserId,
};

use crate::context::{Actor, RequestContext};
use crate::ports::{Clock, PortError, UserStatus};
use crate::settings::AppCatalog;

/// The system name imported events name in their provenance.
pub const GITEGG: &str = "gitegg";
/// GitEgg's social accounts table.
pub const SOCIAL_TABLE: &str = "t_just_auth_social";
/// GitEgg's bindings table.
pub const LINK_TABLE: &str = "t_just_auth_social_user";
/// GitEgg's users table.
pub const USER_TABLE: &str = "t_sys_user";
/// The `source` of GitEgg's mini program social accounts.
pub const MINI_APP_SOURCE: &str = "WECHAT_MINI_APP";
/// Work WeChat's `source`s (JustAuth): its user ids are not WeChat openids, and
/// miniauth has no Work WeChat channel, so they are never imported.
pub const WORK_WECHAT_SOURCES: [&str; 2] = ["WECHAT_ENTERPRISE", "WECHAT_ENTERPRISE_WEB"];

/// A WeChat `source` of GitEgg's social rows (JustAuth's names) that a miniauth channel
/// kind takes: which kinds of configured app its rows can go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WechatSource {
    /// `WECHAT_MINI_APP`: GitEgg's mini program login → a `mini_program` app.
    MiniApp,
    /// `WECHAT_MP`: JustAuth's Official Account web authorisation → an
    /// `official_account` app.
    OfficialAccount,
    /// `WECHAT_OPEN`: JustAuth's Open Platform login (a website's QR code; a mobile
    /// App's login is an Open Platform app too) → a `website` or `mobile_app` app.
    OpenPlatform,
}

impl WechatSource {
    /// Every source, in the order the docs list them.
    pub const ALL: [Self; 3] = [Self::MiniApp, Self::OfficialAccount, Self::OpenPlatform];

    /// The name GitEgg stores in `source`.
    pub fn name(self) -> &'static str {
        match self {
            Self::MiniApp => MINI_APP_SOURCE,
            Self::OfficialAccount => "WECHAT_MP",
            Self::OpenPlatform => "WECHAT_OPEN",
        }
    }

    /// The kinds of app its rows can belong to.
    pub fn kinds(self) -> &'static [Channel] {
        match self {
            Self::MiniApp => &[Channel::MiniProgram],
            Self::OfficialAccount => &[Channel::OfficialAccount],
            Self::OpenPlatform => &[Channel::Website, Channel::MobileApp],
        }
    }

    /// The source a row names, if it is one of these (exactly as GitEgg stores it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The source an option names; Work WeChat's and unknown names are refused, saying
    /// why.
    pub fn parse(name: &str) -> Result<Self, ImportError> {
        let name = name.trim();
        if WORK_WECHAT_SOURCES.contains(&name) {
            return Err(ImportError::WorkWechat(name.to_owned()));
        }
        Self::from_name(name).ok_or_else(|| ImportError::UnknownSource(name.to_owned()))
    }

    /// The option that maps its rows to an app.
    fn option(self) -> String {
        match self {
            Self::MiniApp => "--appid APPID".to_owned(),
            other => format!("--source {}=APPID", other.name()),
        }
    }
}

impl fmt::Display for WechatSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kinds of app `source` takes, in words (`website or mobile_app`).
fn kinds_text(source: WechatSource) -> String {
    source
        .kinds()
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}
/// The `origin` of users the import created (the user directory keeps it).
pub const IMPORTED_ORIGIN: &str = "gitegg_import";

/// A `t_just_auth_social` row, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiteggSocial {
    /// `id`.
    pub id: i64,
    /// `tenant_id`.
    pub tenant_id: i64,
    /// `source` (`WECHAT_MINI_APP`, `WECHAT_MP`, …).
    pub source: Option<String>,
    /// `open_id`, else `uuid` (JustAuth keeps the openid in both for WeChat).
    pub openid: Option<String>,
    /// `union_id`.
    pub unionid: Option<String>,
    /// `nickname`.
    pub nickname: Option<String>,
    /// `avatar`.
    pub avatar: Option<String>,
    /// `create_time`, else `update_time`.
    pub recorded_at: Option<DateTime<Utc>>,
    /// `del_flag` set.
    pub deleted: bool,
}

/// A `t_just_auth_social_user` row, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiteggLink {
    /// `id`.
    pub id: i64,
    /// `user_id`.
    pub user_id: i64,
    /// `social_id`.
    pub social_id: i64,
    /// `create_time`, else `update_time`.
    pub recorded_at: Option<DateTime<Utc>>,
    /// `del_flag` set.
    pub deleted: bool,
}

/// A `t_sys_user` row, as read.
#[derive(Clone, PartialEq, Eq)]
pub struct GiteggUser {
    /// `id`.
    pub id: i64,
    /// `tenant_id`.
    pub tenant_id: i64,
    /// `account`.
    pub account: Option<String>,
    /// `nickname`.
    pub nickname: Option<String>,
    /// `mobile`.
    pub mobile: Option<String>,
    /// `password`: GitEgg's hash (BCrypt, possibly `{bcrypt}`-prefixed).
    pub password: Option<String>,
    /// `status`: 0 disabled, 1 enabled, 2 password expired.
    pub status: Option<i64>,
    /// `create_time`, else `update_time`.
    pub recorded_at: Option<DateTime<Utc>>,
    /// `del_flag` set.
    pub deleted: bool,
}

impl fmt::Debug for GiteggUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GiteggUser")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("status", &self.status)
            .field("deleted", &self.deleted)
            .finish_non_exhaustive()
    }
}

/// The GitEgg database, read page by page.
#[async_trait]
pub trait GiteggSource: Send + Sync {
    /// How many `t_just_auth_social` rows there are (for progress).
    async fn count_socials(&self) -> Result<u64, PortError>;
    /// The social rows with an id above `after`, in id order, at most `limit`.
    async fn socials_after(&self, after: i64, limit: u32) -> Result<Vec<GiteggSocial>, PortError>;
    /// Every binding row (deleted ones too) of these social ids.
    async fn links_of(&self, social_ids: &[i64]) -> Result<Vec<GiteggLink>, PortError>;
    /// The user rows with these ids (deleted ones too).
    async fn users(&self, ids: &[i64]) -> Result<Vec<GiteggUser>, PortError>;
}

/// A BCrypt hash carried over as it is (`$2a$`, `$2b$` or `$2y$`, 60 characters);
/// kept out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct LegacyPasswordHash(String);

impl LegacyPasswordHash {
    /// GitEgg's stored password, if it is a BCrypt hash (Spring's `{bcrypt}` prefix
    /// dropped).
    pub fn bcrypt(stored: &str) -> Option<Self> {
        let hash = stored
            .trim()
            .strip_prefix("{bcrypt}")
            .unwrap_or(stored.trim());
        let known = ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p));
        (known && hash.len() == 60).then(|| Self(hash.to_owned()))
    }

    /// The hash, to store.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LegacyPasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LegacyPasswordHash(<redacted>)")
    }
}

/// A business user to create from a GitEgg user, with GitEgg's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedUser {
    /// The id (GitEgg's: the business system keeps referring to it).
    pub id: UserId,
    /// The mapped tenant.
    pub tenant: TenantId,
    /// The login name.
    pub account: Option<String>,
    /// The mobile number.
    pub mobile: Option<PhoneNumber>,
    /// The display name.
    pub nickname: Option<String>,
    /// The BCrypt hash, verified once at the next password login and then replaced.
    pub password_hash: Option<LegacyPasswordHash>,
    /// Active or disabled.
    pub status: UserStatus,
    /// When GitEgg created the user.
    pub created_at: DateTime<Utc>,
}

/// What miniauth's store already holds of a user about to be imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownUser {
    /// An earlier run imported this user; whether they hold an identity in the app.
    Imported {
        /// A WeChat identity of the app is bound to them.
        holds_identity: bool,
    },
    /// Another user has this id.
    IdTaken,
    /// Another user of the tenant has this account name.
    AccountTaken,
    /// Another user of the tenant has this mobile number.
    MobileTaken,
}

/// What an account's personal data becomes, sealed for it.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedProfile {
    /// The unionid, hashed and sealed.
    pub unionid: Option<SealedUnionId>,
    /// The nickname, sealed.
    pub nickname: Option<SealedDatum>,
    /// The avatar URL, sealed.
    pub avatar_url: Option<SealedDatum>,
}

/// An account's personal data to seal (with the account's data key, created for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileToSeal {
    /// The account.
    pub account: AccountId,
    /// Its unionid.
    pub unionid: Option<UnionId>,
    /// Its nickname.
    pub nickname: Option<String>,
    /// Its avatar URL.
    pub avatar_url: Option<String>,
}

/// One batch to write, in one transaction: users first, then the accounts' streams
/// (each new, from sequence 1) and the bindings' claims.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportBatch {
    /// The users to create.
    pub users: Vec<ImportedUser>,
    /// The new accounts and their events.
    pub accounts: Vec<(AccountId, Vec<SocialAccountEvent>)>,
    /// The metadata every event is recorded with.
    pub metadata: HashMap<String, String>,
}

/// miniauth's store, as the import writes it: in batches.
#[async_trait]
pub trait ImportTarget: Send + Sync {
    /// Which of these accounts have a history already, and whether it is an import.
    async fn known_accounts(
        &self,
        ids: &[AccountId],
    ) -> Result<HashMap<AccountId, bool>, PortError>;
    /// What the store already holds of these users (absent: nothing, create them).
    async fn known_users(
        &self,
        appid: &AppId,
        users: &[ImportedUser],
    ) -> Result<HashMap<UserId, KnownUser>, PortError>;
    /// Seals each account's personal data under its data key (created as needed).
    async fn seal_profiles(
        &self,
        profiles: Vec<ProfileToSeal>,
    ) -> Result<Vec<SealedProfile>, PortError>;
    /// Writes a batch atomically: the users, the events with their chain, state rows,
    /// and claims for the bindings.
    async fn write(&self, batch: ImportBatch) -> Result<(), PortError>;
}

/// Why a GitEgg row is not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// `del_flag` is set on the row.
    Deleted,
    /// No app is given for the row's `source` (or it is not a WeChat source miniauth
    /// imports).
    UnknownAppid {
        /// The source.
        source: String,
    },
    /// The row's `source` is Work WeChat's: its ids are not WeChat openids.
    WorkWechat {
        /// The source.
        source: String,
    },
    /// The openid is missing or not a WeChat openid.
    MalformedOpenid,
    /// The unionid is not a WeChat unionid.
    MalformedUnionid,
    /// The social row is bound to several users.
    SeveralUsers {
        /// The users, by GitEgg id.
        users: Vec<i64>,
    },
    /// The binding's user does not exist (or is deleted) in `t_sys_user`.
    UserMissing {
        /// The GitEgg user id.
        user_id: i64,
    },
    /// The GitEgg tenant has no `--tenant-map` entry.
    TenantUnmapped {
        /// GitEgg's tenant id.
        tenant_id: i64,
    },
    /// The user's tenant is not the app's.
    TenantMismatch {
        /// The user's tenant in miniauth.
        tenant: TenantId,
    },
    /// The user already holds another WeChat identity of this app.
    UserHasIdentity {
        /// The user.
        user_id: i64,
    },
    /// The identity is known to miniauth already, not by an import.
    AccountExists,
    /// miniauth holds another user with this id, account name or mobile.
    UserClash {
        /// The user.
        user_id: i64,
        /// Which key clashes: `id`, `account`, `mobile`.
        key: &'static str,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Deleted => f.write_str("deleted in GitEgg (del_flag)"),
            Self::UnknownAppid { source } => match WechatSource::from_name(source) {
                Some(mappable) => write!(
                    f,
                    "unknown appid: no app is given for source {mappable} ({} maps it)",
                    mappable.option()
                ),
                None => write!(
                    f,
                    "unknown appid: source {source} is not a WeChat source miniauth imports"
                ),
            },
            Self::WorkWechat { source } => write!(
                f,
                "Work WeChat (source {source}): its user ids are not WeChat openids, and \
                 miniauth has no Work WeChat channel"
            ),
            Self::MalformedOpenid => f.write_str("malformed openid"),
            Self::MalformedUnionid => f.write_str("malformed unionid"),
            Self::SeveralUsers { users } => {
                write!(f, "social row bound to several users {users:?}")
            }
            Self::UserMissing { user_id } => {
                write!(f, "user {user_id} does not exist in {USER_TABLE}")
            }
            Self::TenantUnmapped { tenant_id } => {
                write!(f, "GitEgg tenant {tenant_id} has no --tenant-map entry")
            }
            Self::TenantMismatch { tenant } => {
                write!(f, "the user's tenant {tenant} is not the app's")
            }
            Self::UserHasIdentity { user_id } => {
                write!(
                    f,
                    "user {user_id} already holds another WeChat identity of this app"
                )
            }
            Self::AccountExists => f.write_str("the WeChat identity is known to miniauth already"),
            Self::UserClash { user_id, key } => {
                write!(f, "another miniauth user has the {key} of user {user_id}")
            }
        }
    }
}

/// A row that is not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The GitEgg table.
    pub table: &'static str,
    /// The row's id.
    pub row_id: i64,
    /// Why.
    pub reason: SkipReason,
}

/// A social account the import writes (or would write, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The `t_just_auth_social` row.
    pub social_id: i64,
    /// The account it becomes.
    pub account: AccountId,
    /// The binding: the `t_just_auth_social_user` row and the user.
    pub binding: Option<(i64, UserId)>,
    /// Whether the user is created by this import (not by an earlier batch or run).
    pub creates_user: bool,
}

/// What the import reports as it goes.
pub trait ImportObserver: Send + Sync {
    /// `rows` more social rows were handled.
    fn advanced(&self, rows: u64);
    /// A row is skipped.
    fn skipped(&self, skipped: &Skipped);
    /// An account is (or would be) imported.
    fn planned(&self, planned: &Planned);
}

/// How to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// The configured app each source's rows belong to (`--appid` is
    /// `WECHAT_MINI_APP`'s, `--source NAME=APPID` any source's). Rows of a source not
    /// listed are skipped.
    pub sources: Vec<(WechatSource, AppId)>,
    /// GitEgg tenant id → miniauth tenant; `0` maps to the app's tenant unless given.
    pub tenant_map: BTreeMap<i64, TenantId>,
    /// Only report what would be imported.
    pub dry_run: bool,
    /// Social rows per batch (one transaction each).
    pub batch_size: u32,
}

/// The counts at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Social rows read.
    pub rows_read: u64,
    /// Accounts written (or that would be).
    pub accounts: u64,
    /// Bindings written (or that would be).
    pub bindings: u64,
    /// Users created (or that would be).
    pub users: u64,
    /// Accounts an earlier run imported already.
    pub already_imported: u64,
    /// Rows skipped, by reason (`SkipReason`'s kind).
    pub skipped: BTreeMap<&'static str, u64>,
    /// Users imported without a password (GitEgg's was not a BCrypt hash).
    pub users_without_password: u64,
    /// Users imported without a mobile (GitEgg's was not a valid number).
    pub users_without_mobile: u64,
}

impl SkipReason {
    /// A short name of the reason, for the summary.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::UnknownAppid { .. } => "unknown_appid",
            Self::WorkWechat { .. } => "work_wechat",
            Self::MalformedOpenid => "malformed_openid",
            Self::MalformedUnionid => "malformed_unionid",
            Self::SeveralUsers { .. } => "several_users",
            Self::UserMissing { .. } => "user_missing",
            Self::TenantUnmapped { .. } => "tenant_unmapped",
            Self::TenantMismatch { .. } => "tenant_mismatch",
            Self::UserHasIdentity { .. } => "user_has_identity",
            Self::AccountExists => "account_exists",
            Self::UserClash { .. } => "user_clash",
        }
    }
}

/// Why the import stopped (or did not start).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Neither `--appid` nor `--source` was given.
    #[error("no source to import: give --appid APPID (WECHAT_MINI_APP) or --source NAME=APPID")]
    NoSource,
    /// A source name that is not one of GitEgg's WeChat sources.
    #[error(
        "unknown source {0}: GitEgg's WeChat sources are WECHAT_MINI_APP, WECHAT_MP and WECHAT_OPEN"
    )]
    UnknownSource(String),
    /// A Work WeChat source was given.
    #[error(
        "source {0} is Work WeChat's: its user ids are not WeChat openids, and miniauth has no \
         Work WeChat channel to import them into"
    )]
    WorkWechat(String),
    /// The same source was given twice.
    #[error("source {0} is given twice (--appid is WECHAT_MINI_APP's)")]
    SourceTwice(WechatSource),
    /// A source's app is not a configured app.
    #[error("unknown appid {appid} for {wechat}: it is not a configured app")]
    UnknownApp {
        /// The source.
        wechat: WechatSource,
        /// The app given for it.
        appid: AppId,
    },
    /// A source's app is of a kind its rows cannot belong to.
    #[error("{appid} is a {kind} app: {wechat} rows belong to an app of kind {expected}")]
    KindMismatch {
        /// The source.
        wechat: WechatSource,
        /// The app given for it.
        appid: AppId,
        /// The app's kind.
        kind: Channel,
        /// The kinds the source takes, in words.
        expected: String,
    },
    /// The apps are of different tenants and `--tenant-map` does not say which one
    /// GitEgg's tenant 0 is.
    #[error(
        "the apps are of different tenants: say which one GitEgg's tenant 0 is (--tenant-map 0=TENANT)"
    )]
    TenantAmbiguous,
    /// A batch size of 0.
    #[error("the batch size must be at least 1")]
    BatchSize,
    /// Reading GitEgg or writing miniauth failed; batches written before stay written,
    /// and a re-run continues where this one stopped.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// A configured app a source's rows go to.
#[derive(Debug, Clone)]
struct MappedApp {
    appid: AppId,
    tenant: TenantId,
    kind: Channel,
}

/// The options checked against the configured apps.
struct Mapping {
    apps: BTreeMap<WechatSource, MappedApp>,
    /// GitEgg tenant id → miniauth tenant, `0`'s default included.
    tenants: BTreeMap<i64, TenantId>,
}

impl ImportOptions {
    /// Checks the options against the configured apps, before anything is read or
    /// written: at least one source, none twice, each source's app configured and of a
    /// kind its rows can belong to, a batch size of at least 1.
    pub fn check(&self, apps: &AppCatalog) -> Result<(), ImportError> {
        self.mapping(apps).map(|_| ())
    }

    fn mapping(&self, catalog: &AppCatalog) -> Result<Mapping, ImportError> {
        if self.batch_size == 0 {
            return Err(ImportError::BatchSize);
        }
        if self.sources.is_empty() {
            return Err(ImportError::NoSource);
        }
        let mut apps = BTreeMap::new();
        for (source, appid) in &self.sources {
            let app = catalog.get(appid).ok_or_else(|| ImportError::UnknownApp {
                wechat: *source,
                appid: appid.clone(),
            })?;
            if !source.kinds().contains(&app.kind) {
                return Err(ImportError::KindMismatch {
                    wechat: *source,
                    appid: appid.clone(),
                    kind: app.kind,
                    expected: kinds_text(*source),
                });
            }
            let mapped = MappedApp {
                appid: appid.clone(),
                tenant: app.tenant.clone(),
                kind: app.kind,
            };
            if apps.insert(*source, mapped).is_some() {
                return Err(ImportError::SourceTwice(*source));
            }
        }
        let mut tenants = self.tenant_map.clone();
        if let std::collections::btree_map::Entry::Vacant(zero) = tenants.entry(0) {
            // GitEgg's default tenant is the apps' tenant, when they share one.
            let app_tenants: BTreeSet<&TenantId> = apps.values().map(|a| &a.tenant).collect();
            let [tenant] = app_tenants.into_iter().collect::<Vec<_>>()[..] else {
                return Err(ImportError::TenantAmbiguous);
            };
            zero.insert(tenant.clone());
        }
        Ok(Mapping { apps, tenants })
    }
}

/// The import use case.
pub struct GiteggImport {
    apps: AppCatalog,
    source: Arc<dyn GiteggSource>,
    target: Arc<dyn ImportTarget>,
    clock: Arc<dyn Clock>,
}

/// One social row that passed the row checks, with its binding if any.
struct Candidate {
    social: GiteggSocial,
    app: MappedApp,
    openid: OpenId,
    unionid: Option<UnionId>,
    link: Option<(GiteggLink, ImportedUser)>,
}

impl GiteggImport {
    /// An import into `target` of `source`, for the apps configured in `apps`.
    pub fn new(
        apps: AppCatalog,
        source: Arc<dyn GiteggSource>,
        target: Arc<dyn ImportTarget>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            apps,
            source,
            target,
            clock,
        }
    }

    /// How many social rows there are to go through.
    pub async fn rows(&self) -> Result<u64, ImportError> {
        Ok(self.source.count_socials().await?)
    }

    /// Runs the import (or, with `dry_run`, reports it), batch by batch.
    pub async fn run(
        &self,
        options: &ImportOptions,
        observer: &dyn ImportObserver,
    ) -> Result<ImportSummary, ImportError> {
        let mapping = options.mapping(&self.apps)?;
        let mut run = Run {
            options,
            mapping,
            summary: ImportSummary::default(),
            identities: HashSet::new(),
            created: HashSet::new(),
            accounts: HashSet::new(),
            mobiles: HashSet::new(),
            observer,
            now: self.clock.now(),
        };
        let mut after = 0;
        loop {
            let socials = self.source.socials_after(after, options.batch_size).await?;
            let Some(last) = socials.last() else {
                break;
            };
            after = last.id;
            let rows = socials.len() as u64;
            self.batch(&mut run, socials).await?;
            run.summary.rows_read += rows;
            observer.advanced(rows);
        }
        Ok(run.summary)
    }

    async fn batch(
        &self,
        run: &mut Run<'_>,
        socials: Vec<GiteggSocial>,
    ) -> Result<(), ImportError> {
        let ids: Vec<i64> = socials.iter().map(|s| s.id).collect();
        let mut links: HashMap<i64, Vec<GiteggLink>> = HashMap::new();
        for link in self.source.links_of(&ids).await? {
            links.entry(link.social_id).or_default().push(link);
        }
        let user_ids: Vec<i64> = links
            .values()
            .flatten()
            .filter(|l| !l.deleted)
            .map(|l| l.user_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let users: HashMap<i64, GiteggUser> = self
            .source
            .users(&user_ids)
            .await?
            .into_iter()
            .map(|u| (u.id, u))
            .collect();

        // Row checks: what each row says about itself.
        let mut candidates = Vec::with_capacity(socials.len());
        for social in socials {
            let social_links = links.remove(&social.id).unwrap_or_default();
            match run.check_row(social, social_links, &users) {
                Ok(candidate) => candidates.push(candidate),
                Err(skipped) => run.skip(skipped),
            }
        }

        // What miniauth holds already.
        let account_ids: Vec<AccountId> = candidates
            .iter()
            .map(|c| AccountId::new(&c.app.appid, &c.openid))
            .collect();
        let known_accounts = self.target.known_accounts(&account_ids).await?;
        let mut users_by_app: BTreeMap<AppId, Vec<ImportedUser>> = BTreeMap::new();
        for candidate in &candidates {
            if let Some((_, user)) = &candidate.link {
                users_by_app
                    .entry(candidate.app.appid.clone())
                    .or_default()
                    .push(user.clone());
            }
        }
        // Whether a user holds an identity is a question per app.
        let mut known_users: HashMap<(AppId, UserId), KnownUser> = HashMap::new();
        for (appid, users) in users_by_app {
            for (user, known) in self.target.known_users(&appid, &users).await? {
                known_users.insert((appid.clone(), user), known);
            }
        }

        let mut planned = Vec::new();
        let mut batch_users: Vec<ImportedUser> = Vec::new();
        for (candidate, account) in candidates.into_iter().zip(account_ids) {
            match known_accounts.get(&account) {
                Some(true) => {
                    run.summary.already_imported += 1;
                    continue;
                }
                Some(false) => {
                    run.skip(Skipped {
                        table: SOCIAL_TABLE,
                        row_id: candidate.social.id,
                        reason: SkipReason::AccountExists,
                    });
                    continue;
                }
                None => {}
            }
            let mut creates_user = false;
            if let Some((link, user)) = &candidate.link {
                let identity = (candidate.app.appid.clone(), user.id);
                let clash = match known_users.get(&identity) {
                    // One identity per user per app: bound by this run or an earlier one.
                    _ if run.identities.contains(&identity) => Some(SkipReason::UserHasIdentity {
                        user_id: link.user_id,
                    }),
                    // Created by this run for another app (the same person, bound
                    // through another source): bound again, not created twice.
                    _ if run.created.contains(&user.id) => None,
                    Some(KnownUser::Imported {
                        holds_identity: true,
                    }) => Some(SkipReason::UserHasIdentity {
                        user_id: link.user_id,
                    }),
                    Some(KnownUser::Imported {
                        holds_identity: false,
                    }) => None,
                    Some(KnownUser::IdTaken) => Some(clash(link, "id")),
                    Some(KnownUser::AccountTaken) => Some(clash(link, "account")),
                    Some(KnownUser::MobileTaken) => Some(clash(link, "mobile")),
                    None => match run.claim_user_keys(user) {
                        Some(key) => Some(clash(link, key)),
                        None => {
                            creates_user = true;
                            None
                        }
                    },
                };
                if let Some(reason) = clash {
                    run.skip(Skipped {
                        table: LINK_TABLE,
                        row_id: link.id,
                        reason,
                    });
                    continue;
                }
                run.identities.insert(identity);
                if creates_user {
                    run.created.insert(user.id);
                    batch_users.push(user.clone());
                }
            }
            planned.push((candidate, account, creates_user));
        }

        for (candidate, account, creates_user) in &planned {
            run.observer.planned(&Planned {
                social_id: candidate.social.id,
                account: account.clone(),
                binding: candidate.link.as_ref().map(|(l, u)| (l.id, u.id)),
                creates_user: *creates_user,
            });
            run.summary.accounts += 1;
            run.summary.bindings += u64::from(candidate.link.is_some());
            run.summary.users += u64::from(*creates_user);
        }
        if run.options.dry_run || planned.is_empty() {
            return Ok(());
        }

        let sealed = self
            .target
            .seal_profiles(
                planned
                    .iter()
                    .map(|(c, account, _)| ProfileToSeal {
                        account: account.clone(),
                        unionid: c.unionid.clone(),
                        nickname: c.social.nickname.clone(),
                        avatar_url: c.social.avatar.clone(),
                    })
                    .collect(),
            )
            .await?;
        let mut accounts = Vec::with_capacity(planned.len());
        for ((candidate, account, _), profile) in planned.into_iter().zip(sealed) {
            let events = import_events(candidate, profile, run.now);
            accounts.push((account, events));
        }
        let ctx = RequestContext {
            request_id: format!("import-{}", run.now.timestamp_millis()),
            actor: Actor::Import,
            client_ip: None,
        };
        self.target
            .write(ImportBatch {
                users: batch_users,
                accounts,
                metadata: ctx.metadata(run.now),
            })
            .await?;
        Ok(())
    }
}

fn clash(link: &GiteggLink, key: &'static str) -> SkipReason {
    SkipReason::UserClash {
        user_id: link.user_id,
        key,
    }
}

/// The events of one imported account, decided by the aggregate on a new account.
fn import_events(
    candidate: Candidate,
    profile: SealedProfile,
    now: DateTime<Utc>,
) -> Vec<SocialAccountEvent> {
    let recorded_there = candidate.social.recorded_at.unwrap_or(now);
    let binding = candidate.link.map(|(link, user)| ImportedBinding {
        user_id: user.id,
        source: Provenance {
            system: GITEGG.to_owned(),
            table: LINK_TABLE.to_owned(),
            row_id: link.id,
        },
        // A binding cannot precede the identity it binds.
        bound_there: link.recorded_at.unwrap_or(now).max(recorded_there),
    });
    SocialAccount::default()
        .decide(SocialAccountCommand::Import {
            appid: candidate.app.appid,
            openid: candidate.openid,
            unionid: profile.unionid,
            channel: candidate.app.kind,
            nickname: profile.nickname,
            avatar_url: profile.avatar_url,
            source: Provenance {
                system: GITEGG.to_owned(),
                table: SOCIAL_TABLE.to_owned(),
                row_id: candidate.social.id,
            },
            recorded_there,
            binding,
            at: now,
        })
        // A new account always imports.
        .unwrap_or_default()
}

/// The state of one run across its batches.
struct Run<'a> {
    options: &'a ImportOptions,
    mapping: Mapping,
    summary: ImportSummary,
    /// (app, user) of the bindings this run made (one identity per user per app).
    identities: HashSet<(AppId, UserId)>,
    /// The users this run creates (or, in a dry run, would).
    created: HashSet<UserId>,
    /// (tenant, account) and (tenant, mobile) of the users this run creates.
    accounts: HashSet<(TenantId, String)>,
    mobiles: HashSet<(TenantId, String)>,
    observer: &'a dyn ImportObserver,
    now: DateTime<Utc>,
}

impl Run<'_> {
    fn skip(&mut self, skipped: Skipped) {
        *self
            .summary
            .skipped
            .entry(skipped.reason.kind())
            .or_default() += 1;
        self.observer.skipped(&skipped);
    }

    /// Takes the user's account name and mobile for this run; the key another user of
    /// the run took first, if any.
    fn claim_user_keys(&mut self, user: &ImportedUser) -> Option<&'static str> {
        let account = user.account.clone().map(|a| (user.tenant.clone(), a));
        let mobile = user.mobile.as_ref().map(|m| {
            (
                user.tenant.clone(),
                format!("{} {}", m.country_code(), m.pure()),
            )
        });
        if account.as_ref().is_some_and(|a| self.accounts.contains(a)) {
            return Some("account");
        }
        if mobile.as_ref().is_some_and(|m| self.mobiles.contains(m)) {
            return Some("mobile");
        }
        self.accounts.extend(account);
        self.mobiles.extend(mobile);
        if user.password_hash.is_none() {
            self.summary.users_without_password += 1;
        }
        None
    }

    /// What a social row and its bindings say about themselves, before miniauth is asked.
    fn check_row(
        &mut self,
        social: GiteggSocial,
        links: Vec<GiteggLink>,
        users: &HashMap<i64, GiteggUser>,
    ) -> Result<Candidate, Skipped> {
        let skip = |reason| Skipped {
            table: SOCIAL_TABLE,
            row_id: social.id,
            reason,
        };
        if social.deleted {
            return Err(skip(SkipReason::Deleted));
        }
        let source = social.source.clone().unwrap_or_default();
        if WORK_WECHAT_SOURCES.contains(&source.as_str()) {
            return Err(skip(SkipReason::WorkWechat { source }));
        }
        let Some(app) = WechatSource::from_name(&source)
            .and_then(|s| self.mapping.apps.get(&s))
            .cloned()
        else {
            return Err(skip(SkipReason::UnknownAppid { source }));
        };
        let Some(openid) = social.openid.as_deref().and_then(|o| OpenId::parse(o).ok()) else {
            return Err(skip(SkipReason::MalformedOpenid));
        };
        let unionid = match social.unionid.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(UnionId::parse(raw).map_err(|_| skip(SkipReason::MalformedUnionid))?),
        };
        let tenant = self
            .mapping
            .tenants
            .get(&social.tenant_id)
            .cloned()
            .ok_or_else(|| {
                skip(SkipReason::TenantUnmapped {
                    tenant_id: social.tenant_id,
                })
            })?;
        if tenant != app.tenant {
            return Err(skip(SkipReason::TenantMismatch { tenant }));
        }
        let (deleted, live): (Vec<_>, Vec<_>) = links.into_iter().partition(|l| l.deleted);
        for link in deleted {
            self.skip(Skipped {
                table: LINK_TABLE,
                row_id: link.id,
                reason: SkipReason::Deleted,
            });
        }
        let distinct: Vec<i64> = live
            .iter()
            .map(|l| l.user_id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if distinct.len() > 1 {
            return Err(skip(SkipReason::SeveralUsers { users: distinct }));
        }
        let candidate = |link| Candidate {
            social: social.clone(),
            app: app.clone(),
            openid: openid.clone(),
            unionid: unionid.clone(),
            link,
        };
        // Several rows for the same user: the first one stands for the binding.
        let Some(link) = live.into_iter().min_by_key(|l| l.id) else {
            return Ok(candidate(None));
        };
        let link_skip = |reason| Skipped {
            table: LINK_TABLE,
            row_id: link.id,
            reason,
        };
        let user = match users.get(&link.user_id) {
            Some(user) if !user.deleted => user,
            _ => {
                return Err(link_skip(SkipReason::UserMissing {
                    user_id: link.user_id,
                }))
            }
        };
        let user_tenant = self
            .mapping
            .tenants
            .get(&user.tenant_id)
            .cloned()
            .ok_or_else(|| {
                link_skip(SkipReason::TenantUnmapped {
                    tenant_id: user.tenant_id,
                })
            })?;
        if user_tenant != app.tenant {
            return Err(link_skip(SkipReason::TenantMismatch {
                tenant: user_tenant,
            }));
        }
        let Ok(id) = UserId::new(user.id) else {
            return Err(link_skip(SkipReason::UserMissing {
                user_id: link.user_id,
            }));
        };
        let mobile = user
            .mobile
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .and_then(|m| {
                let parsed = PhoneNumber::new(m, "86").ok();
                if parsed.is_none() {
                    self.summary.users_without_mobile += 1;
                }
                parsed
            });
        let imported = ImportedUser {
            id,
            tenant: user_tenant,
            account: user
                .account
                .as_deref()
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned),
            mobile,
            nickname: user.nickname.clone().filter(|n| !n.trim().is_empty()),
            password_hash: user
                .password
                .as_deref()
                .and_then(LegacyPasswordHash::bcrypt),
            // 0 is disabled; 1 enabled; 2 (password expired) may still log in.
            status: match user.status {
                Some(0) => UserStatus::Disabled,
                _ => UserStatus::Active,
            },
            created_at: user.recorded_at.unwrap_or(self.now),
        };
        Ok(candidate(Some((link, imported))))
    }
}
