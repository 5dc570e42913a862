//! A GitEgg database (MySQL or MariaDB), read for `miniauth import gitegg`: the
//! application's [`GiteggSource`] port on sqlx's MySQL driver.
//!
//! It reads three tables of GitEgg's schema (its published `gitegg_cloud_system` SQL
//! scripts), only the columns the import maps:
//!
//! * `t_just_auth_social`: `id`, `tenant_id`, `source`, `uuid`, `open_id`, `union_id`,
//!   `nickname`, `avatar`, `create_time`, `update_time`, `del_flag`;
//! * `t_just_auth_social_user`: `id`, `user_id`, `social_id`, `create_time`,
//!   `update_time`, `del_flag`;
//! * `t_sys_user`: `id`, `tenant_id`, `account`, `nickname`, `mobile`, `password`,
//!   `status`, `create_time`, `update_time`, `del_flag`.
//!
//! Nothing else is read: GitEgg's plaintext session keys (`access_code`, tokens) stay
//! where they are.

#![warn(missing_docs)]

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use miniauth_application::import::{GiteggLink, GiteggSocial, GiteggSource, GiteggUser};
use miniauth_application::ports::PortError;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{QueryBuilder, Row};

/// Ids per `IN (…)` list.
const CHUNK: usize = 1000;

/// GitEgg's database. GitEgg writes `DATETIME`s in its server's local time: `offset`
/// says which (China Standard Time, `+08:00`, by default).
#[derive(Clone)]
pub struct GiteggDatabase {
    pool: MySqlPool,
    offset: FixedOffset,
}

impl GiteggDatabase {
    /// Connects to `url` (`mysql://user:password@host:port/database`).
    pub async fn connect(url: &str, offset: FixedOffset) -> Result<Self, PortError> {
        let pool = MySqlPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await
            .map_err(|e| PortError::unavailable("the GitEgg database", e))?;
        Ok(Self { pool, offset })
    }

    /// A source on a pool the caller opened.
    pub fn from_pool(pool: MySqlPool, offset: FixedOffset) -> Self {
        Self { pool, offset }
    }

    fn time(&self, local: Option<NaiveDateTime>) -> Option<DateTime<Utc>> {
        local
            .and_then(|t| self.offset.from_local_datetime(&t).single())
            .map(|t| t.with_timezone(&Utc))
    }

    /// `create_time`, else `update_time`.
    fn recorded_at(&self, row: &MySqlRow) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        let created: Option<NaiveDateTime> = row.try_get("create_time")?;
        let updated: Option<NaiveDateTime> = row.try_get("update_time")?;
        Ok(self.time(created.or(updated)))
    }
}

fn read_error(error: sqlx::Error) -> PortError {
    PortError::unavailable("the GitEgg database", error)
}

/// `del_flag` is a `TINYINT` (NULL reads as not deleted).
fn deleted(row: &MySqlRow) -> Result<bool, sqlx::Error> {
    Ok(row.try_get::<Option<i64>, _>("del_flag")?.unwrap_or(0) != 0)
}

/// Text columns: trimmed, empty reads as absent.
fn text(row: &MySqlRow, column: &str) -> Result<Option<String>, sqlx::Error> {
    Ok(row
        .try_get::<Option<String>, _>(column)?
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

/// `SELECT … WHERE {column} IN (ids)`, chunked.
async fn rows_in(
    pool: &MySqlPool,
    select: &str,
    column: &str,
    ids: &[i64],
) -> Result<Vec<MySqlRow>, PortError> {
    let mut rows = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let mut q = QueryBuilder::new(format!("{select} WHERE {column} IN ("));
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        q.push(")");
        rows.extend(q.build().fetch_all(pool).await.map_err(read_error)?);
    }
    Ok(rows)
}

#[async_trait]
impl GiteggSource for GiteggDatabase {
    async fn count_socials(&self) -> Result<u64, PortError> {
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM t_just_auth_social")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(read_error)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn socials_after(&self, after: i64, limit: u32) -> Result<Vec<GiteggSocial>, PortError> {
        sqlx::query(
            "SELECT id, tenant_id, source, uuid, open_id, union_id, nickname, avatar, \
             create_time, update_time, CAST(del_flag AS SIGNED) AS del_flag \
             FROM t_just_auth_social WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(read_error)?
        .iter()
        .map(|row| {
            Ok(GiteggSocial {
                id: row.try_get("id")?,
                tenant_id: row.try_get("tenant_id")?,
                source: text(row, "source")?,
                openid: text(row, "open_id")?.or(text(row, "uuid")?),
                unionid: text(row, "union_id")?,
                nickname: text(row, "nickname")?,
                avatar: text(row, "avatar")?,
                recorded_at: self.recorded_at(row)?,
                deleted: deleted(row)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(read_error)
    }

    async fn links_of(&self, social_ids: &[i64]) -> Result<Vec<GiteggLink>, PortError> {
        rows_in(
            &self.pool,
            "SELECT id, user_id, social_id, create_time, update_time, \
             CAST(del_flag AS SIGNED) AS del_flag FROM t_just_auth_social_user",
            "social_id",
            social_ids,
        )
        .await?
        .iter()
        .map(|row| {
            Ok(GiteggLink {
                id: row.try_get("id")?,
                user_id: row.try_get("user_id")?,
                social_id: row.try_get("social_id")?,
                recorded_at: self.recorded_at(row)?,
                deleted: deleted(row)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(read_error)
    }

    async fn users(&self, ids: &[i64]) -> Result<Vec<GiteggUser>, PortError> {
        rows_in(
            &self.pool,
            "SELECT id, tenant_id, account, nickname, mobile, password, \
             CAST(status AS SIGNED) AS status, create_time, update_time, \
             CAST(del_flag AS SIGNED) AS del_flag FROM t_sys_user",
            "id",
            ids,
        )
        .await?
        .iter()
        .map(|row| {
            Ok(GiteggUser {
                id: row.try_get("id")?,
                tenant_id: row.try_get("tenant_id")?,
                account: text(row, "account")?,
                nickname: text(row, "nickname")?,
                mobile: text(row, "mobile")?,
                password: text(row, "password")?,
                status: row.try_get("status")?,
                recorded_at: self.recorded_at(row)?,
                deleted: deleted(row)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(read_error)
    }
}
