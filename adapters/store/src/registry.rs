//! The binding registry: database unique keys make "one user per WeChat identity" and
//! "one WeChat identity per user per app" hold across every instance.

use async_trait::async_trait;
use miniauth_application::ports::{Binding, BindingRegistry, Claim, ClaimError, PortError};
use miniauth_domain::{AccountId, AppId, OpenId, UserId};
use sqlx::Row;

use crate::db::{is_unique_violation, millis, on_pool, port_error, Db, Engine};
use crate::read_models::ReadModels;

/// `BindingRegistry` on the `bindings` table. Cheap to clone.
#[derive(Clone)]
pub struct SqlBindingRegistry {
    db: Db,
    /// The unionid index: the bindings of an Open Platform identity across apps.
    read_models: ReadModels,
}

impl SqlBindingRegistry {
    pub(crate) fn new(db: Db, read_models: ReadModels) -> Self {
        Self { db, read_models }
    }

    async fn holder(&self, appid: &AppId, openid: &OpenId) -> Result<Option<i64>, PortError> {
        on_pool!(&self.db.pool, p => {
            sqlx::query("SELECT user_id FROM bindings WHERE appid = $1 AND openid = $2")
                .bind(appid.as_str())
                .bind(openid.as_str())
                .fetch_optional(p)
                .await
                .and_then(|r| r.map(|r| r.try_get::<i64, _>("user_id")).transpose())
                .map_err(port_error)
        })
    }
}

/// A claim remembers what of the log it was made after, so that the projection of an
/// `Unbound` releases only claims made before the `Unbound` committed (see
/// `read_models.rs`): on SQLite the newest position (commit order: one writer); on
/// PostgreSQL, where positions are not the commit order, the snapshot it was made in.
fn claim_statement(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => {
            "INSERT INTO bindings (appid, openid, user_id, claimed_at, claimed_after) \
             VALUES ($1, $2, $3, $4, (SELECT COALESCE(MAX(position), 0) FROM events))"
        }
        Engine::Postgres => {
            "INSERT INTO bindings (appid, openid, user_id, claimed_at, claimed_after, \
             claimed_snapshot) VALUES ($1, $2, $3, $4, \
             (SELECT COALESCE(MAX(position), 0) FROM events), pg_current_snapshot())"
        }
    }
}

fn user_id(raw: i64) -> Result<UserId, PortError> {
    UserId::new(raw).map_err(|_| PortError::Internal("bindings.user_id: invalid".into()))
}

#[async_trait]
impl BindingRegistry for SqlBindingRegistry {
    async fn claim(
        &self,
        appid: &AppId,
        openid: &OpenId,
        user: UserId,
    ) -> Result<Claim, ClaimError> {
        // A conflicting row may vanish between the insert and the look-up (released
        // meanwhile): then try again.
        for _ in 0..3 {
            let inserted = {
                let _turn = self.db.write_turn().await;
                let statement = claim_statement(self.db.engine());
                on_pool!(&self.db.pool, p => {
                    sqlx::query(statement)
                    .bind(appid.as_str())
                    .bind(openid.as_str())
                    .bind(user.get())
                    .bind(millis(self.db.now()))
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected())
                })
            };
            match inserted {
                Ok(_) => return Ok(Claim::New),
                Err(e) if is_unique_violation(&e) => {}
                Err(e) => return Err(port_error(e).into()),
            }
            match self.holder(appid, openid).await? {
                Some(holder) if holder == user.get() => return Ok(Claim::Existing),
                Some(holder) => return Err(ClaimError::IdentityTaken(user_id(holder)?)),
                None => {}
            }
            if self.identity_of(appid, user).await?.is_some() {
                return Err(ClaimError::UserHasIdentity);
            }
        }
        Err(PortError::Unavailable("the binding registry (contended)".into()).into())
    }

    async fn release(&self, appid: &AppId, openid: &OpenId, user: UserId) -> Result<(), PortError> {
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            sqlx::query("DELETE FROM bindings WHERE appid = $1 AND openid = $2 AND user_id = $3")
                .bind(appid.as_str())
                .bind(openid.as_str())
                .bind(user.get())
                .execute(p)
                .await
                .map_err(port_error)?;
        });
        Ok(())
    }

    async fn identity_of(&self, appid: &AppId, user: UserId) -> Result<Option<OpenId>, PortError> {
        let openid: Option<String> = on_pool!(&self.db.pool, p => {
            sqlx::query("SELECT openid FROM bindings WHERE appid = $1 AND user_id = $2")
                .bind(appid.as_str())
                .bind(user.get())
                .fetch_optional(p)
                .await
                .and_then(|r| r.map(|r| r.try_get::<String, _>("openid")).transpose())
                .map_err(port_error)?
        });
        openid
            .map(|o| {
                OpenId::parse(&o)
                    .map_err(|_| PortError::Internal("bindings.openid: invalid".into()))
            })
            .transpose()
    }

    async fn bindings_of(&self, user: UserId) -> Result<Vec<Binding>, PortError> {
        let rows: Vec<(String, String)> = on_pool!(&self.db.pool, p => {
            sqlx::query("SELECT appid, openid FROM bindings WHERE user_id = $1 ORDER BY appid")
                .bind(user.get())
                .fetch_all(p)
                .await
                .map_err(port_error)?
                .iter()
                .map(|r| Ok((r.try_get("appid")?, r.try_get("openid")?)))
                .collect::<Result<_, sqlx::Error>>()
                .map_err(port_error)?
        });
        rows.into_iter()
            .map(|(appid, openid)| {
                Ok(Binding {
                    appid: AppId::parse(&appid)
                        .map_err(|_| PortError::Internal("bindings.appid: invalid".into()))?,
                    openid: OpenId::parse(&openid)
                        .map_err(|_| PortError::Internal("bindings.openid: invalid".into()))?,
                    user_id: user,
                })
            })
            .collect()
    }

    async fn bound_by_unionid(
        &self,
        unionid_hash: &str,
        apps: &[AppId],
        except: &AccountId,
    ) -> Result<Vec<(AccountId, UserId)>, PortError> {
        Ok(self
            .read_models
            .bound_by_unionid_hash(unionid_hash)
            .await?
            .into_iter()
            .filter(|(account, _)| account != except && apps.contains(&account.appid()))
            .collect())
    }
}
