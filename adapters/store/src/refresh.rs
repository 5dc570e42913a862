//! Refresh tokens: opaque, stored as SHA-256, grouped in families, rotated on every
//! use; presenting a rotated token again revokes its whole family.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use miniauth_application::ports::{
    PortError, RefreshError, RefreshToken, RefreshTokenStore, TokenSubject,
};
use miniauth_domain::{AppId, TenantId, UserId};
use sqlx::Row;

use crate::crypto::{random_token, token_hash};
use crate::db::{millis, on_pool, port_error, Db};

/// `RefreshTokenStore` on the `refresh_tokens` table. Cheap to clone.
#[derive(Clone)]
pub struct SqlRefreshTokens {
    db: Db,
    ttl: Duration,
}

struct TokenRow {
    family: String,
    user_id: i64,
    tenant: String,
    appid: Option<String>,
    expires_at: i64,
    rotated_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl SqlRefreshTokens {
    pub(crate) fn new(db: Db, ttl: Duration) -> Self {
        Self { db, ttl }
    }

    fn expires_in(&self) -> u64 {
        self.ttl.num_seconds().max(0) as u64
    }

    async fn row(&self, hash: &str) -> Result<Option<TokenRow>, PortError> {
        on_pool!(&self.db.pool, p => {
            let row = sqlx::query(
                "SELECT family_id, user_id, tenant, appid, expires_at, rotated_at, revoked_at \
                 FROM refresh_tokens WHERE token_hash = $1",
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
                    expires_at: r.try_get("expires_at")?,
                    rotated_at: r.try_get("rotated_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .transpose()
            .map_err(port_error)
        })
    }

    async fn revoke_family(&self, family: &str, now: DateTime<Utc>) -> Result<(), PortError> {
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
                .bind(millis(now))
                .bind(family)
                .execute(p)
                .await
                .map_err(port_error)?;
        });
        Ok(())
    }
}

fn subject(row: &TokenRow) -> Result<TokenSubject, PortError> {
    let bad = |what: &str| PortError::Internal(format!("refresh_tokens.{what}: invalid"));
    Ok(TokenSubject {
        user_id: UserId::new(row.user_id).map_err(|_| bad("user_id"))?,
        tenant: TenantId::parse(&row.tenant).map_err(|_| bad("tenant"))?,
        appid: row
            .appid
            .as_deref()
            .map(AppId::parse)
            .transpose()
            .map_err(|_| bad("appid"))?,
    })
}

#[async_trait]
impl RefreshTokenStore for SqlRefreshTokens {
    async fn issue(
        &self,
        subject: &TokenSubject,
        now: DateTime<Utc>,
    ) -> Result<RefreshToken, PortError> {
        let token = random_token();
        let family = hex::encode(rand::random::<[u8; 16]>());
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family_id, user_id, tenant, appid, issued_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(token_hash(&token))
            .bind(&family)
            .bind(subject.user_id.get())
            .bind(subject.tenant.as_str())
            .bind(subject.appid.as_ref().map(|a| a.as_str()))
            .bind(millis(now))
            .bind(millis(now + self.ttl))
            .execute(p)
            .await
            .map_err(port_error)?;
        });
        Ok(RefreshToken {
            token,
            expires_in: self.expires_in(),
        })
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
        if row.revoked_at.is_some() {
            return Err(RefreshError::Unknown);
        }
        if row.expires_at <= millis(now) {
            return Err(RefreshError::Expired);
        }
        let subject = subject(&row)?;
        let successor = random_token();
        let won = {
            let _turn = self.db.write_turn().await;
            on_pool!(&self.db.pool, p => {
                let mut tx = p.begin().await.map_err(port_error)?;
                // The conditional update is the race's referee: one presenter wins.
                let won = sqlx::query(
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
                    .bind(millis(now + self.ttl))
                    .execute(&mut *tx)
                    .await
                    .map_err(port_error)?;
                }
                tx.commit().await.map_err(port_error)?;
                won
            })
        };
        if !won {
            // Rotated (or revoked) by a concurrent presenter of the same token.
            self.revoke_family(&row.family, now).await?;
            return Err(RefreshError::Reused);
        }
        Ok((
            subject,
            RefreshToken {
                token: successor,
                expires_in: self.expires_in(),
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
}
