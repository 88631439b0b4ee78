//! bare_axum: the baseline for the GET benchmark. An axum handler at `/v1/orders/{id}` that
//! answers a fixed order-shaped JSON body, with nothing else in the way.

use axum::Json;
use axum::extract::Path;
use axum::routing::get;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8090".to_string());
    let app = axum::Router::new().route(
        "/v1/orders/{id}",
        get(|Path(id): Path<String>| async move {
            Json(serde_json::json!({
                "id": id, "user_id": "01a1fcdf-40f9-713f-8212-280d61d767f2", "currency": "USDC", "amount": "25.000000",
                "status": "pending", "claim_id": null, "version": 1,
                "items": [{"id": "01a1fcdf-40f9-713f-8212-280d61d767f3", "product_id": "sku-1", "product_name": "Mug",
                           "price": "12.500000", "quantity": 2}],
                "created_at": "2026-11-21T06:50:52.075194Z", "updated_at": "2026-11-21T06:50:52.075194Z"
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
