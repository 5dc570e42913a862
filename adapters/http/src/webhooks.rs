//! The admin API's view of webhook deliveries: the parked ones (out of attempts; their
//! subscription waits for a retry, which `miniauth webhooks retry <id>` makes).

use axum::extract::State;
use axum::Json;
use miniauth_application::webhooks::ParkedDelivery;

use crate::error::ApiError;
use crate::extract::Admin;
use crate::state::ApiState;

/// The parked webhook deliveries, oldest first (admin token). Empty when no
/// `[[webhooks]]` subscription is configured.
#[utoipa::path(
    get, path = "/v1/admin/webhooks/parked", tag = "v1",
    security(("admin" = [])),
    responses((status = 200, description = "The parked deliveries", body = Vec<ParkedDelivery>)),
)]
pub(crate) async fn parked(
    State(state): State<ApiState>,
    _admin: Admin,
) -> Result<Json<Vec<ParkedDelivery>>, ApiError> {
    let parked = match &state.webhooks {
        Some(delivery) => delivery.parked().await?,
        None => Vec::new(),
    };
    Ok(Json(parked))
}
