//! Refresh tokens: opaque, stored as SHA-256, grouped in families, rotated on every
//! use; presenting a rotated token again revokes its whole family.
//!
//! A family is a login session. Its row in `refresh_families` is the one place that says
//! whether the session lives: revocation marks it (logout, reuse, unbind, erasure, a
//! disabled user), rotation locks it so that a revocation cannot slip between the check
//! and the successor, and access tokens are checked against it by their `sid`. Each
//! token has a sliding expiry; the family has an absolute lifetime from its creation,
//! which no rotation extends.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use miniauth_application::ports::{
    LiveRefreshToken, PortError, RefreshError, RefreshToken, RefreshTokenStore, SessionId,
    SessionOwner, SessionScope, TokenSubject,
};
use miniauth_domain::{AppId, TenantId, UserId};
use sqlx::Row;

use crate::crypto::{random_token, token_hash};
use sqlx::{Postgres, QueryBuilder};

use crate::db::{from_millis, millis, on_pool, port_error, Db, Pool};

/// How long the lifetimes of refresh tokens are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshLifetimes {
    /// Each token's sliding expiry: a rotation issues a successor valid this long.
    pub ttl: Duration,
    /// A family's absolute lifetime from its first token: no rotation goes past it.
    pub max_lifetime: Duration,
}

/// What one purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshPurge {
    /// Token rows expired or revoked before the cutoff.
    pub tokens: u64,
    /// Family rows left without any token.
    pub families: u64,
}

/// `RefreshTokenStore` on the `refresh_tokens` and `refresh_families` tables. Cheap to
/// clone.
#[derive(Clone)]
pub struct SqlRefreshTokens {
    db: Db,
    lifetimes: RefreshLifetimes,
}

struct TokenRow {
    family: String,
    user_id: i64,
    tenant: String,
    appid: Option<String>,
    issued_at: i64,
    expires_at: i64,
    rotated_at: Option<i64>,
    revoked_at: Option<i64>,
    family_created_at: i64,
    family_revoked_at: Option<i64>,
}

/// A login session about to start: its family and first token, written by
/// [`RefreshTokenStore::issue`] or with an account's events in one commit
/// (`AccountRepository::commit_with_session`, event_store.rs).
pub(crate) struct NewSession {
    owner: SessionOwner,
    token: String,
    family: String,
    created_at: i64,
    expires_at: i64,
    expires_in: u64,
}

impl NewSession {
    /// Appends the two inserts as common table expressions (`family AS (…), token AS
    /// (…)`) of a PostgreSQL statement.
    pub(crate) fn push_postgres(&self, query: &mut QueryBuilder<'_, Postgres>) {
        let appid = self.owner.appid.as_ref().map(|a| a.as_str().to_owned());
        query.push(
            "new_family AS (INSERT INTO refresh_families \
             (family_id, user_id, tenant, appid, created_at) VALUES (",
        );
        query
            .separated(", ")
            .push_bind(self.family.clone())
            .push_bind(self.owner.user_id.get())
            .push_bind(self.owner.tenant.as_str().to_owned())
            .push_bind(appid.clone())
            .push_bind(self.created_at);
        query.push(
            ")), new_token AS (INSERT INTO refresh_tokens (token_hash, family_id, user_id, \
             tenant, appid, issued_at, expires_at) VALUES (",
        );
        query
            .separated(", ")
            .push_bind(token_hash(&self.token))
            .push_bind(self.family.clone())
            .push_bind(self.owner.user_id.get())
            .push_bind(self.owner.tenant.as_str().to_owned())
            .push_bind(appid)
            .push_bind(self.created_at)
            .push_bind(self.expires_at);
        query.push("))");
    }

    /// Writes the family and its first token in `tx` (SQLite).
    pub(crate) async fn write_sqlite(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    ) -> Result<(), sqlx::Error> {
        let appid = self.owner.appid.as_ref().map(|a| a.as_str());
        sqlx::query(
            "INSERT INTO refresh_families (family_id, user_id, tenant, appid, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&self.family)
        .bind(self.owner.user_id.get())
        .bind(self.owner.tenant.as_str())
        .bind(appid)
        .bind(self.created_at)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, tenant, appid, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(token_hash(&self.token))
        .bind(&self.family)
        .bind(self.owner.user_id.get())
        .bind(self.owner.tenant.as_str())
        .bind(appid)
        .bind(self.created_at)
        .bind(self.expires_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// What [`RefreshTokenStore::issue`] answers, once written.
    pub(crate) fn started(self) -> Result<(TokenSubject, RefreshToken), PortError> {
        let session = SessionId::parse(&self.family)
            .map_err(|_| PortError::Internal("a generated family id is invalid".into()))?;
        Ok((
            TokenSubject::new(self.owner, session),
            RefreshToken {
                token: self.token,
                expires_in: self.expires_in,
            },
        ))
    }
}

impl SqlRefreshTokens {
    pub(crate) fn new(db: Db, lifetimes: RefreshLifetimes) -> Self {
        Self { db, lifetimes }
    }

    /// A new login session for `owner` at `now`: a fresh family and token, not written.
    pub(crate) fn new_session(&self, owner: &SessionOwner, now: DateTime<Utc>) -> NewSession {
        let created_at = millis(now);
        let (expires_at, expires_in) = self.expiry(now, created_at);
        NewSession {
            owner: owner.clone(),
            token: random_token(),
            family: hex::encode(rand::random::<[u8; 16]>()),
            created_at,
            expires_at,
            expires_in,
        }
    }

    /// The end of the absolute lifetime of a family created at `created_at` (ms).
    fn family_end(&self, created_at: i64) -> i64 {
        created_at.saturating_add(self.lifetimes.max_lifetime.num_milliseconds())
    }

    /// A token issued at `now` in a family created at `created_at`: valid for the
    /// sliding lifetime, never past the family's end. Answers (expires_at, expires_in).
    fn expiry(&self, now: DateTime<Utc>, created_at: i64) -> (i64, u64) {
        let expires_at = millis(now + self.lifetimes.ttl).min(self.family_end(created_at));
        // Rounded up: a token valid for 600 ms more is not announced as expired.
        let expires_in = ((expires_at - millis(now)).max(0) + 999) / 1000;
        (expires_at, expires_in as u64)
    }

    async fn row(&self, hash: &str) -> Result<Option<TokenRow>, PortError> {
        on_pool!(&self.db.pool, p => {
            let row = sqlx::query(
                "SELECT t.family_id, t.user_id, t.tenant, t.appid, t.issued_at, t.expires_at, t.rotated_at, \
                 t.revoked_at, f.created_at AS family_created_at, f.revoked_at AS family_revoked_at \
                 FROM refresh_tokens t JOIN refresh_families f ON f.family_id = t.family_id \
                 WHERE t.token_hash = $1",
            )
            .bind(hash)
            .fetch_optional(p)
            .await
            .map_err(port_error)?;
            row.map(|r| -> Result<TokenRow, sqlx::Error> {
                Ok(TokenRow {
                    family: r.try_get("family_id")?,
                    user_id: r.try_get("user_id")?,
                    tenant: r.try_get("tenant")?,
                    appid: r.try_get("appid")?,
                    issued_at: r.try_get("issued_at")?,
                    expires_at: r.try_get("expires_at")?,
                    rotated_at: r.try_get("rotated_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                    family_created_at: r.try_get("family_created_at")?,
                    family_revoked_at: r.try_get("family_revoked_at")?,
                })
            })
            .transpose()
            .map_err(port_error)
        })
    }

    async fn revoke_family(&self, family: &str, now: DateTime<Utc>) -> Result<(), PortError> {
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            let mut tx = p.begin().await.map_err(port_error)?;
            sqlx::query("UPDATE refresh_families SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
                .bind(millis(now))
                .bind(family)
                .execute(&mut *tx)
                .await
                .map_err(port_error)?;
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
                .bind(millis(now))
                .bind(family)
                .execute(&mut *tx)
                .await
                .map_err(port_error)?;
            tx.commit().await.map_err(port_error)?;
        });
        Ok(())
    }

    /// Deletes at most `limit` token rows that expired or were revoked before
    /// `before`, then at most `limit` families left without tokens (whose sessions
    /// can no longer be refreshed, so whose access tokens are long expired). Bounded,
    /// so that a periodic task never holds the database for long.
    pub async fn purge(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<RefreshPurge, PortError> {
        let cutoff = millis(before);
        let limit = i64::from(limit.max(1));
        let _turn = self.db.write_turn().await;
        let (tokens, families) = on_pool!(&self.db.pool, p => {
            let tokens = sqlx::query(
                "DELETE FROM refresh_tokens WHERE token_hash IN (\
                 SELECT token_hash FROM refresh_tokens \
                 WHERE expires_at < $1 OR revoked_at < $1 LIMIT $2)",
            )
            .bind(cutoff)
            .bind(limit)
            .execute(p)
            .await
            .map_err(port_error)?
            .rows_affected();
            let families = sqlx::query(
                "DELETE FROM refresh_families WHERE family_id IN (\
                 SELECT f.family_id FROM refresh_families f WHERE f.created_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.family_id) \
                 LIMIT $2)",
            )
            .bind(cutoff)
            .bind(limit)
            .execute(p)
            .await
            .map_err(port_error)?
            .rows_affected();
            (tokens, families)
        });
        Ok(RefreshPurge { tokens, families })
    }
}

fn subject(row: &TokenRow) -> Result<TokenSubject, PortError> {
    let bad = |what: &str| PortError::Internal(format!("refresh_tokens.{what}: invalid").into());
    Ok(TokenSubject {
        user_id: UserId::new(row.user_id).map_err(|_| bad("user_id"))?,
        tenant: TenantId::parse(&row.tenant).map_err(|_| bad("tenant"))?,
        appid: row
            .appid
            .as_deref()
            .map(AppId::parse)
            .transpose()
            .map_err(|_| bad("appid"))?,
        session: SessionId::parse(&row.family).map_err(|_| bad("family_id"))?,
    })
}

#[async_trait]
impl RefreshTokenStore for SqlRefreshTokens {
    async fn issue(
        &self,
        owner: &SessionOwner,
        now: DateTime<Utc>,
    ) -> Result<(TokenSubject, RefreshToken), PortError> {
        let session = self.new_session(owner, now);
        match &self.db.pool {
            // One statement: the family and its first token.
            Pool::Postgres(p) => {
                let mut query = QueryBuilder::new("WITH ");
                session.push_postgres(&mut query);
                query.push(" SELECT 1");
                query.build().execute(p).await.map_err(port_error)?;
            }
            Pool::Sqlite(p) => {
                let _turn = self.db.write_turn().await;
                let mut tx = p.begin().await.map_err(port_error)?;
                session.write_sqlite(&mut tx).await.map_err(port_error)?;
                tx.commit().await.map_err(port_error)?;
            }
        }
        session.started()
    }

    async fn rotate(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(TokenSubject, RefreshToken), RefreshError> {
        let hash = token_hash(token);
        let row = self.row(&hash).await?.ok_or(RefreshError::Unknown)?;
        if row.rotated_at.is_some() {
            self.revoke_family(&row.family, now).await?;
            return Err(RefreshError::Reused);
        }
        if row.revoked_at.is_some() || row.family_revoked_at.is_some() {
            return Err(RefreshError::Unknown);
        }
        if row.expires_at <= millis(now) || self.family_end(row.family_created_at) <= millis(now) {
            return Err(RefreshError::Expired);
        }
        let subject = subject(&row)?;
        let successor = random_token();
        let (expires_at, expires_in) = self.expiry(now, row.family_created_at);
        let (live, won) = {
            let _turn = self.db.write_turn().await;
            on_pool!(&self.db.pool, p => {
                let mut tx = p.begin().await.map_err(port_error)?;
                // Locks the family row: a concurrent revocation either happened before
                // (the family is not live: no successor) or waits for this commit and
                // then revokes the successor with the rest.
                let live = sqlx::query(
                    "UPDATE refresh_families SET last_used_at = $1 \
                     WHERE family_id = $2 AND revoked_at IS NULL",
                )
                .bind(millis(now))
                .bind(&row.family)
                .execute(&mut *tx)
                .await
                .map_err(port_error)?
                .rows_affected()
                    == 1;
                // The conditional update is the race's referee: one presenter wins.
                let won = live
                    && sqlx::query(
                        "UPDATE refresh_tokens SET rotated_at = $1 \
                         WHERE token_hash = $2 AND rotated_at IS NULL AND revoked_at IS NULL",
                    )
                    .bind(millis(now))
                    .bind(&hash)
                    .execute(&mut *tx)
                    .await
                    .map_err(port_error)?
                    .rows_affected()
                        == 1;
                if won {
                    sqlx::query(
                        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, tenant, appid, issued_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(token_hash(&successor))
                    .bind(&row.family)
                    .bind(row.user_id)
                    .bind(&row.tenant)
                    .bind(&row.appid)
                    .bind(millis(now))
                    .bind(expires_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(port_error)?;
                }
                tx.commit().await.map_err(port_error)?;
                (live, won)
            })
        };
        if !live {
            // Revoked while this request ran: by a concurrent presenter of this very
            // token (reuse), or by a logout, unbind, erasure or disabled user.
            let rotated = self
                .row(&hash)
                .await?
                .is_some_and(|r| r.rotated_at.is_some());
            return Err(if rotated {
                RefreshError::Reused
            } else {
                RefreshError::Unknown
            });
        }
        if !won {
            // Rotated (or revoked) by a concurrent presenter of the same token.
            self.revoke_family(&row.family, now).await?;
            return Err(RefreshError::Reused);
        }
        Ok((
            subject,
            RefreshToken {
                token: successor,
                expires_in,
            },
        ))
    }

    async fn revoke(
        &self,
        token: &str,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<(), RefreshError> {
        let row = self
            .row(&token_hash(token))
            .await?
            .ok_or(RefreshError::Unknown)?;
        // Someone else's token is, to this caller, a token that does not exist.
        if row.user_id != user.get() {
            return Err(RefreshError::Unknown);
        }
        self.revoke_family(&row.family, now).await?;
        Ok(())
    }

    async fn revoke_sessions(
        &self,
        user: UserId,
        scope: &SessionScope,
        now: DateTime<Utc>,
    ) -> Result<u64, PortError> {
        // One static filter per scope; `$3` is the scope's value. A typed NULL keeps
        // PostgreSQL's planner sure of the parameter's type.
        let (families, value) = match scope {
            SessionScope::Session(session) => (
                "SELECT family_id FROM refresh_families WHERE user_id = $2 AND family_id = $3",
                Some(session.as_str()),
            ),
            SessionScope::App(appid) => (
                "SELECT family_id FROM refresh_families WHERE user_id = $2 AND appid = $3",
                Some(appid.as_str()),
            ),
            SessionScope::All => (
                "SELECT family_id FROM refresh_families \
                 WHERE user_id = $2 AND CAST($3 AS TEXT) IS NULL",
                None,
            ),
        };
        let _turn = self.db.write_turn().await;
        let revoked = on_pool!(&self.db.pool, p => {
            let mut tx = p.begin().await.map_err(port_error)?;
            let revoked = sqlx::query(&format!(
                "UPDATE refresh_families SET revoked_at = $1 \
                 WHERE revoked_at IS NULL AND family_id IN ({families})"
            ))
            .bind(millis(now))
            .bind(user.get())
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(port_error)?
            .rows_affected();
            sqlx::query(&format!(
                "UPDATE refresh_tokens SET revoked_at = $1 \
                 WHERE revoked_at IS NULL AND family_id IN ({families})"
            ))
            .bind(millis(now))
            .bind(user.get())
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(port_error)?;
            tx.commit().await.map_err(port_error)?;
            revoked
        });
        Ok(revoked)
    }

    async fn session_live(
        &self,
        subject: &TokenSubject,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        let born_after = millis(now - self.lifetimes.max_lifetime);
        on_pool!(&self.db.pool, p => {
            Ok(sqlx::query(
                "SELECT 1 AS one FROM refresh_families \
                 WHERE family_id = $1 AND user_id = $2 AND tenant = $3 \
                 AND revoked_at IS NULL AND created_at > $4",
            )
            .bind(subject.session.as_str())
            .bind(subject.user_id.get())
            .bind(subject.tenant.as_str())
            .bind(born_after)
            .fetch_optional(p)
            .await
            .map_err(port_error)?
            .is_some())
        })
    }

    async fn inspect(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<LiveRefreshToken>, PortError> {
        let Some(row) = self.row(&token_hash(token)).await? else {
            return Ok(None);
        };
        let now = millis(now);
        let usable = row.rotated_at.is_none()
            && row.revoked_at.is_none()
            && row.family_revoked_at.is_none()
            && row.expires_at > now
            && self.family_end(row.family_created_at) > now;
        if !usable {
            return Ok(None);
        }
        let at = |ms: i64| from_millis("refresh_tokens", ms);
        Ok(Some(LiveRefreshToken {
            subject: subject(&row)?,
            issued_at: at(row.issued_at)?,
            expires_at: at(row.expires_at)?,
        }))
    }

    async fn revoke_family_of(&self, token: &str, now: DateTime<Utc>) -> Result<bool, PortError> {
        let Some(row) = self.row(&token_hash(token)).await? else {
            return Ok(false);
        };
        self.revoke_family(&row.family, now).await?;
        Ok(true)
    }
}
