//! The store is the service's readiness: when the database does not answer, no use case
//! can do its work.

use async_trait::async_trait;
use miniauth_application::ports::Readiness;

use crate::Store;

#[async_trait]
impl Readiness for Store {
    async fn check(&self) -> Result<(), String> {
        self.ping()
            .await
            .map_err(|_| "the store does not answer".to_owned())
    }
}
