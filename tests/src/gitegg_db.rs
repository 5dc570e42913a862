//! A GitEgg-shaped MySQL/MariaDB database for the import's tests and measurement: the
//! three tables `miniauth import gitegg` reads, as GitEgg's published SQL scripts
//! define them (the columns the import reads, and a few it must leave alone), in a
//! database of its own per test.
//!
//! `MINIAUTH_TEST_MYSQL_URL` names the server (default `mysql://root@127.0.0.1:3306/test`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDateTime;
use miniauth_application::import::{
    GiteggImport, GiteggLink, GiteggSocial, GiteggSource, GiteggUser,
};
use miniauth_application::ports::PortError;
use miniauth_domain::TenantId;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::{Executor, QueryBuilder};

/// The server the tests use, when `MINIAUTH_TEST_MYSQL_URL` does not say.
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";

const SCHEMA: &str = r#"
CREATE TABLE t_just_auth_social (
  id bigint(20) NOT NULL AUTO_INCREMENT,
  tenant_id bigint(20) NOT NULL DEFAULT 0,
  uuid varchar(100) NULL DEFAULT NULL,
  source varchar(32) NULL DEFAULT NULL,
  username varchar(64) NULL DEFAULT NULL,
  nickname varchar(64) NULL DEFAULT NULL,
  avatar varchar(500) NULL DEFAULT NULL,
  gender tinyint(2) NOT NULL DEFAULT 0,
  access_token varchar(500) NULL DEFAULT NULL,
  uid varchar(100) NULL DEFAULT NULL,
  open_id varchar(100) NULL DEFAULT NULL,
  access_code varchar(255) NULL DEFAULT NULL,
  union_id varchar(255) NULL DEFAULT NULL,
  create_time datetime NULL DEFAULT NULL,
  creator bigint(20) NULL DEFAULT NULL,
  update_time datetime NULL DEFAULT NULL,
  operator bigint(20) NULL DEFAULT NULL,
  del_flag tinyint(2) NOT NULL DEFAULT 0,
  PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
CREATE TABLE t_just_auth_social_user (
  id bigint(20) NOT NULL AUTO_INCREMENT,
  tenant_id bigint(20) NOT NULL DEFAULT 0,
  user_id bigint(20) NOT NULL DEFAULT 0,
  social_id bigint(20) NOT NULL DEFAULT 0,
  create_time datetime NULL DEFAULT NULL,
  creator bigint(20) NULL DEFAULT NULL,
  update_time datetime NULL DEFAULT NULL,
  operator bigint(20) NULL DEFAULT NULL,
  del_flag tinyint(2) NOT NULL DEFAULT 0,
  PRIMARY KEY (id),
  INDEX social (social_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
CREATE TABLE t_sys_user (
  id bigint(20) NOT NULL AUTO_INCREMENT,
  tenant_id bigint(20) NOT NULL DEFAULT 0,
  account varchar(32) NULL DEFAULT NULL,
  nickname varchar(32) NULL DEFAULT NULL,
  real_name varchar(32) NULL DEFAULT NULL,
  email varchar(64) NULL DEFAULT NULL,
  mobile varchar(32) NULL DEFAULT NULL,
  password varchar(255) NULL DEFAULT NULL,
  status tinyint(2) NULL DEFAULT 1,
  avatar varchar(255) NULL DEFAULT NULL,
  create_time datetime NULL DEFAULT NULL,
  creator bigint(20) NULL DEFAULT NULL,
  update_time datetime NULL DEFAULT NULL,
  operator bigint(20) NULL DEFAULT NULL,
  del_flag tinyint(2) NULL DEFAULT 0,
  PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
"#;

/// A `t_just_auth_social` row.
#[derive(Debug, Clone)]
pub struct SocialRow {
    /// `id`.
    pub id: i64,
    /// `tenant_id`.
    pub tenant_id: i64,
    /// `source`.
    pub source: String,
    /// `uuid` and `open_id`.
    pub openid: String,
    /// `union_id`.
    pub unionid: Option<String>,
    /// `nickname`.
    pub nickname: String,
    /// `avatar`.
    pub avatar: String,
    /// `access_code`: GitEgg keeps the session key there in plaintext.
    pub session_key: String,
    /// `create_time` (GitEgg's local time).
    pub created: NaiveDateTime,
    /// `del_flag`.
    pub deleted: bool,
}

/// A `t_just_auth_social_user` row.
#[derive(Debug, Clone)]
pub struct LinkRow {
    /// `id`.
    pub id: i64,
    /// `user_id`.
    pub user_id: i64,
    /// `social_id`.
    pub social_id: i64,
    /// `create_time`.
    pub created: NaiveDateTime,
    /// `del_flag`.
    pub deleted: bool,
}

/// A `t_sys_user` row.
#[derive(Debug, Clone)]
pub struct UserRow {
    /// `id`.
    pub id: i64,
    /// `tenant_id`.
    pub tenant_id: i64,
    /// `account`.
    pub account: String,
    /// `nickname`.
    pub nickname: String,
    /// `mobile`.
    pub mobile: Option<String>,
    /// `password`: a BCrypt hash, as GitEgg stores it.
    pub password: Option<String>,
    /// `status`.
    pub status: i64,
    /// `create_time`.
    pub created: NaiveDateTime,
    /// `del_flag`.
    pub deleted: bool,
}

/// A GitEgg database of its own on the test server, dropped by [`GiteggDb::drop_database`].
pub struct GiteggDb {
    /// Its URL, for `--from`.
    pub url: String,
    /// A pool on it.
    pub pool: MySqlPool,
    name: String,
    server: MySqlPool,
}

/// Rows per multi-row insert.
const CHUNK: usize = 1000;

impl GiteggDb {
    /// Creates a uniquely named database with GitEgg's tables.
    pub async fn create() -> Self {
        let base = std::env::var("MINIAUTH_TEST_MYSQL_URL")
            .unwrap_or_else(|_| DEFAULT_MYSQL_URL.to_owned());
        let server = MySqlPoolOptions::new()
            .max_connections(1)
            .connect(&base)
            .await
            .unwrap_or_else(|e| {
                panic!("the MariaDB/MySQL server at {base} (MINIAUTH_TEST_MYSQL_URL): {e}")
            });
        let name = format!("gitegg_{}_{}", std::process::id(), rand::random::<u32>());
        server
            .execute(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4").as_str())
            .await
            .expect("create the GitEgg database");
        let mut url = url::Url::parse(&base).expect("MINIAUTH_TEST_MYSQL_URL is a URL");
        url.set_path(&name);
        let url = url.to_string();
        let pool = MySqlPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("connect to the GitEgg database");
        for statement in SCHEMA.split(';').filter(|s| !s.trim().is_empty()) {
            pool.execute(statement).await.expect("GitEgg's schema");
        }
        Self {
            url,
            pool,
            name,
            server,
        }
    }

    /// Inserts social rows.
    pub async fn socials(&self, rows: &[SocialRow]) {
        for chunk in rows.chunks(CHUNK) {
            let mut q = QueryBuilder::new(
                "INSERT INTO t_just_auth_social (id, tenant_id, uuid, source, nickname, avatar, \
                 open_id, access_code, union_id, create_time, update_time, del_flag) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.id)
                    .push_bind(r.tenant_id)
                    .push_bind(&r.openid)
                    .push_bind(&r.source)
                    .push_bind(&r.nickname)
                    .push_bind(&r.avatar)
                    .push_bind(&r.openid)
                    .push_bind(&r.session_key)
                    .push_bind(&r.unionid)
                    .push_bind(r.created)
                    .push_bind(r.created)
                    .push_bind(i64::from(r.deleted));
            });
            q.build().execute(&self.pool).await.expect("insert socials");
        }
    }

    /// Inserts binding rows.
    pub async fn links(&self, rows: &[LinkRow]) {
        for chunk in rows.chunks(CHUNK) {
            let mut q = QueryBuilder::new(
                "INSERT INTO t_just_auth_social_user (id, tenant_id, user_id, social_id, \
                 create_time, update_time, del_flag) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.id)
                    .push_bind(0)
                    .push_bind(r.user_id)
                    .push_bind(r.social_id)
                    .push_bind(r.created)
                    .push_bind(r.created)
                    .push_bind(i64::from(r.deleted));
            });
            q.build().execute(&self.pool).await.expect("insert links");
        }
    }

    /// Inserts user rows.
    pub async fn users(&self, rows: &[UserRow]) {
        for chunk in rows.chunks(CHUNK) {
            let mut q = QueryBuilder::new(
                "INSERT INTO t_sys_user (id, tenant_id, account, nickname, mobile, password, \
                 status, create_time, update_time, del_flag) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.id)
                    .push_bind(r.tenant_id)
                    .push_bind(&r.account)
                    .push_bind(&r.nickname)
                    .push_bind(&r.mobile)
                    .push_bind(&r.password)
                    .push_bind(r.status)
                    .push_bind(r.created)
                    .push_bind(r.created)
                    .push_bind(i64::from(r.deleted));
            });
            q.build().execute(&self.pool).await.expect("insert users");
        }
    }

    /// Drops the database.
    pub async fn drop_database(self) {
        self.pool.close().await;
        let _ = self
            .server
            .execute(format!("DROP DATABASE IF EXISTS {}", self.name).as_str())
            .await;
        self.server.close().await;
    }
}

/// The import of `source` into `app`'s store, for the demo apps of the default tenant:
/// the mini programs [`crate::APP`] and [`crate::SECOND_APP`], and the simulator's
/// Official Account, website and mobile App.
pub fn importer(app: &crate::TestApp, source: Arc<dyn GiteggSource>) -> GiteggImport {
    use miniauth_domain::Channel;
    use miniauth_wechat::sim::{
        DEMO_MOBILE_APP_APPID, DEMO_OFFICIAL_ACCOUNT_APPID, DEMO_WEBSITE_APPID,
    };
    let apps = miniauth_application::AppCatalog::new(
        [
            (crate::APP, Channel::MiniProgram),
            (crate::SECOND_APP, Channel::MiniProgram),
            (DEMO_OFFICIAL_ACCOUNT_APPID, Channel::OfficialAccount),
            (DEMO_WEBSITE_APPID, Channel::Website),
            (DEMO_MOBILE_APP_APPID, Channel::MobileApp),
        ]
        .map(|(appid, kind)| miniauth_application::AppSettings {
            appid: crate::app(appid),
            tenant: TenantId::parse(crate::TENANT).expect("tenant"),
            registration: miniauth_application::RegistrationPolicy::Auto,
            watermark: miniauth_domain::crypto::WatermarkPolicy { max_age: None },
            legacy_payloads: true,
            payload_rejections_per_key: miniauth_application::DEFAULT_PAYLOAD_REJECTIONS_PER_KEY,
            link_by_unionid: true,
            kind,
            redirect_uris: Vec::new(),
        }),
    );
    GiteggImport::new(
        apps,
        source,
        Arc::new(app.store.import_target()),
        app.clock.clone(),
    )
}

/// A GitEgg database in memory, for tests that need an imported account but not
/// MariaDB: its social rows, bindings and users as the port reads them.
#[derive(Default)]
pub struct MemorySource {
    /// The social rows, in id order.
    pub socials: Vec<GiteggSocial>,
    /// The bindings.
    pub links: Vec<GiteggLink>,
    /// The users.
    pub users: Vec<GiteggUser>,
}

#[async_trait]
impl GiteggSource for MemorySource {
    async fn count_socials(&self) -> Result<u64, PortError> {
        Ok(self.socials.len() as u64)
    }

    async fn socials_after(&self, after: i64, limit: u32) -> Result<Vec<GiteggSocial>, PortError> {
        Ok(self
            .socials
            .iter()
            .filter(|s| s.id > after)
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn links_of(&self, social_ids: &[i64]) -> Result<Vec<GiteggLink>, PortError> {
        Ok(self
            .links
            .iter()
            .filter(|l| social_ids.contains(&l.social_id))
            .cloned()
            .collect())
    }

    async fn users(&self, ids: &[i64]) -> Result<Vec<GiteggUser>, PortError> {
        Ok(self
            .users
            .iter()
            .filter(|u| ids.contains(&u.id))
            .cloned()
            .collect())
    }
}
