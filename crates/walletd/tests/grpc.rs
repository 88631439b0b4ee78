//! The gRPC API (`walletd.v1`): every REST operation has its RPC; grpcurl lists, describes and
//! calls through reflection and checks health; and the supply service's behaviour over gRPC on
//! both storage backends (create, get, list, update, delete, and the errors as status details).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::process::Command;

use rpc::v1::supply_service_client::SupplyServiceClient;
use rpc::v1::{
    ClaimStepRequest, CreateSupplyRequest, DeleteSupplyRequest, GetSupplyRequest, ListSuppliesRequest,
    UpdateSupplyRequest,
};
use rstest::rstest;
use serde_json::Value;
use testkit::process::{WalletdProcess, admin_token, command};
use testkit::{Backend, TempDir, TestApp};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

const BIN: &str = env!("CARGO_BIN_EXE_walletd");

/// Each REST operation of the four services (method, OpenAPI path) and its RPC.
const OPERATIONS: &[(&str, &str, &str, &str)] = &[
    ("post", "/v1/supplies", "SupplyService", "CreateSupply"),
    ("get", "/v1/supplies/{id}", "SupplyService", "GetSupply"),
    ("patch", "/v1/supplies/{id}", "SupplyService", "UpdateSupply"),
    ("delete", "/v1/supplies/{id}", "SupplyService", "DeleteSupply"),
    ("get", "/v1/supplies", "SupplyService", "ListSupplies"),
    ("post", "/v1/orders", "OrderService", "CreateOrder"),
    ("get", "/v1/orders/{id}", "OrderService", "GetOrder"),
    ("get", "/v1/orders/{id}/items", "OrderService", "ListOrderItems"),
    ("patch", "/v1/orders/{id}", "OrderService", "UpdateOrder"),
    ("delete", "/v1/orders/{id}", "OrderService", "DeleteOrder"),
    ("get", "/v1/orders", "OrderService", "ListOrders"),
    ("post", "/v1/orders/{id}/claim", "ClaimService", "ClaimOrder"),
    ("get", "/v1/orders/{id}/claim", "ClaimService", "GetOrderClaim"),
    ("get", "/v1/claims/{id}", "ClaimService", "GetClaim"),
    ("post", "/v1/claims/{id}/release", "ClaimService", "ReleaseClaim"),
    ("get", "/v1/claims", "ClaimService", "ListClaims"),
    ("get", "/v1/wallet/accounts", "WalletService", "ListAccounts"),
    ("get", "/v1/wallet/accounts/{currency}", "WalletService", "GetAccount"),
    ("get", "/v1/wallet/entries", "WalletService", "ListEntries"),
    ("get", "/v1/wallet/holds", "WalletService", "ListHolds"),
    ("post", "/v1/wallet/transfers", "WalletService", "CreateTransfer"),
    ("get", "/v1/wallet/transfers/{id}", "WalletService", "GetTransfer"),
    ("post", "/v1/admin/deposits", "WalletService", "CreateDeposit"),
    ("get", "/v1/admin/wallet/verify", "WalletService", "VerifyLedger"),
    ("get", "/v1/wallet/deposit-addresses/{chain}", "ChainService", "GetDepositAddress"),
    ("get", "/v1/wallet/deposits", "ChainService", "ListDeposits"),
    ("post", "/v1/wallet/withdrawals", "ChainService", "CreateWithdrawal"),
    ("get", "/v1/wallet/withdrawals/{id}", "ChainService", "GetWithdrawal"),
    ("get", "/v1/wallet/withdrawals", "ChainService", "ListWithdrawals"),
];

/// The RPC names a `service` block of the protocol declares.
fn rpcs_of(service: &str) -> Vec<String> {
    let protos = [
        include_str!("../../../proto/walletd/v1/supply.proto"),
        include_str!("../../../proto/walletd/v1/order.proto"),
        include_str!("../../../proto/walletd/v1/claim.proto"),
        include_str!("../../../proto/walletd/v1/wallet.proto"),
        include_str!("../../../proto/walletd/v1/chain.proto"),
    ];
    let header = format!("service {service} {{");
    let Some(block) = protos.iter().find_map(|p| p.split_once(&header).map(|(_, rest)| rest)) else {
        return Vec::new();
    };
    let block = block.split_once("\n}").map_or(block, |(b, _)| b);
    block
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .filter_map(|l| l.split_once('(').map(|(name, _)| name.trim().to_string()))
        .collect()
}

/// Every REST operation of the four services, chains on (read from the served OpenAPI document, so
/// a new route without an RPC fails here) has its RPC in the protocol.
#[tokio::test]
async fn every_rest_operation_has_its_rpc() {
    // A chain whose node is nowhere: its routes are served all the same.
    let dir = testkit::TempDir::new();
    let xpub = "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDFdp6W1EGMcet8";
    let chains = dir.0.join("chains.toml");
    let text = format!(
        "[[chain]]\nname = \"local\"\nchain_id = 31337\nrpc_url = \"http://127.0.0.1:9\"\nconfirmations = 1\nxpub = \"{xpub}\"\n\n[[chain.asset]]\ncurrency = \"ETH\"\nnative = true\n"
    );
    std::fs::write(&chains, text).unwrap();
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.chains_file = Some(chains)).await;
    let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let services = ["/v1/supplies", "/v1/orders", "/v1/claims", "/v1/wallet", "/v1/admin/deposits", "/v1/admin/wallet"];
    let mut served = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !services.iter().any(|p| path.starts_with(p)) {
            continue;
        }
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                served.push((method.to_string(), path.clone()));
            }
        }
    }
    for (method, path) in &served {
        let op = OPERATIONS.iter().find(|(m, p, _, _)| m == method && p == path);
        let Some((_, _, service, rpc)) = op else { panic!("{method} {path} has no RPC in the table") };
        assert!(rpcs_of(service).contains(&rpc.to_string()), "{service} lacks rpc {rpc} for {method} {path}");
    }
    assert_eq!(served.len(), OPERATIONS.len(), "the table lists an operation REST does not serve: {served:?}");
}

fn grpcurl(args: &[&str]) -> (bool, String) {
    let out = Command::new("grpcurl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("grpcurl ({e}): run the suite with scripts/test.sh, which installs it"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// grpcurl, through reflection: lists the services, describes one, calls one with a token, sees
/// the stable error code in a refused call's details, and queries health.
#[test]
fn grpcurl_lists_describes_calls_and_checks_health() {
    let dir = TempDir::new();
    let server = WalletdProcess::start(BIN, &dir.0, &[]);
    let addr = server.grpc.trim_start_matches("http://").to_string();
    let target = addr.as_str();

    let (ok, listed) = grpcurl(&["-plaintext", target, "list"]);
    assert!(ok, "{listed}");
    for s in [
        "walletd.v1.SupplyService",
        "walletd.v1.OrderService",
        "walletd.v1.ClaimService",
        "walletd.v1.WalletService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(listed.lines().any(|l| l.trim() == s), "{s} not listed: {listed}");
    }
    let (ok, described) = grpcurl(&["-plaintext", target, "describe", "walletd.v1.SupplyService"]);
    assert!(ok && described.contains("rpc CreateSupply ( .walletd.v1.CreateSupplyRequest )"), "{described}");

    // Reflection v1 answers too (grpcurl itself asks v1alpha).
    let (ok, v1) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"list_services": ""}"#,
        target,
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ]);
    assert!(ok && v1.contains("walletd.v1.WalletService"), "{v1}");

    let token = admin_token(BIN, &dir.0, &[]);
    let auth = format!("authorization: Bearer {token}");
    let (ok, created) = grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"currency": "USDC", "amount": "12.5"}"#,
        target,
        "walletd.v1.SupplyService/CreateSupply",
    ]);
    assert!(ok, "{created}");
    let created: Value = serde_json::from_str(&created).unwrap();
    assert_eq!((created["amount"].as_str(), created["status"].as_str()), (Some("12.500000"), Some("active")));

    let (ok, refused) = grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"currency": "USDC", "amount": "1.1234567"}"#,
        target,
        "walletd.v1.SupplyService/CreateSupply",
    ]);
    assert!(!ok, "{refused}");
    assert!(refused.contains("Code: InvalidArgument"), "{refused}");
    let compact: String = refused.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(compact.contains(r#""reason":"VALIDATION_FAILED""#), "the code in ErrorInfo: {refused}");
    assert!(compact.contains(r#""field":"amount""#), "the field in BadRequest: {refused}");

    let (ok, no_token) = grpcurl(&["-plaintext", "-d", r#"{"id": "x"}"#, target, "walletd.v1.SupplyService/GetSupply"]);
    assert!(!ok && no_token.contains("Code: Unauthenticated") && no_token.contains("UNAUTHENTICATED"), "{no_token}");

    for service in ["", "walletd.v1.ClaimService"] {
        let body = format!(r#"{{"service": "{service}"}}"#);
        let (ok, health) = grpcurl(&["-plaintext", "-d", &body, target, "grpc.health.v1.Health/Check"]);
        assert!(ok && health.contains("SERVING"), "{service}: {health}");
    }
    // Counted per RPC with its code.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refused = rt.block_on(
        server.metric("grpc_server_requests_total", &["method=\"CreateSupply\"", "code=\"InvalidArgument\""]),
    );
    assert_eq!(refused, 1.0);
}

async fn supplies(app: &TestApp) -> SupplyServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(app.grpc_base.clone()).unwrap().connect().await.unwrap();
    SupplyServiceClient::new(channel)
}

fn with_token<M>(token: &str, message: M) -> tonic::Request<M> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

/// The stable code and the bad fields of a refused call.
fn refusal(status: &tonic::Status) -> (Code, String, Vec<String>) {
    let details = status.get_error_details();
    let reason = details.error_info().map(|i| i.reason.clone()).unwrap_or_default();
    let fields =
        details.bad_request().map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect()).unwrap_or_default();
    (status.code(), reason, fields)
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn supplies_over_grpc(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, bob) = (app.new_unfunded_user().await, app.new_unfunded_user().await);
    let mut rpc = supplies(&app).await;

    // Create, then get: the same supply, as REST shows it.
    let create = CreateSupplyRequest { currency: "USDC".into(), amount: "250.5".into() };
    let created = rpc.create_supply(with_token(&alice.access, create)).await.unwrap().into_inner();
    assert_eq!((created.amount.as_str(), created.available.as_str()), ("250.500000", "250.500000"));
    assert_eq!((created.status.as_str(), created.version), ("active", 1));
    assert_eq!(created.user_id, alice.user_id.to_string());
    let got = rpc.get_supply(with_token(&alice.access, GetSupplyRequest { id: created.id.clone() })).await.unwrap();
    assert_eq!(got.into_inner(), created);
    let rest: Value =
        app.get(&format!("/v1/supplies/{}", created.id), &alice.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(rest["amount"], "250.500000");

    // Bad input names the field; another user's supply is not found; no token is unauthenticated.
    let bad = rpc.get_supply(with_token(&alice.access, GetSupplyRequest { id: "nope".into() })).await.unwrap_err();
    assert_eq!(refusal(&bad), (Code::InvalidArgument, "VALIDATION_FAILED".into(), vec!["id".into()]));
    let create = CreateSupplyRequest { currency: "DOGE".into(), amount: "1".into() };
    let bad = rpc.create_supply(with_token(&alice.access, create)).await.unwrap_err();
    assert_eq!(refusal(&bad).0, Code::InvalidArgument);
    assert_eq!(refusal(&bad).2, vec!["currency".to_string()], "{bad:?}");
    let theirs =
        rpc.get_supply(with_token(&bob.access, GetSupplyRequest { id: created.id.clone() })).await.unwrap_err();
    assert_eq!(refusal(&theirs), (Code::NotFound, "NOT_FOUND".into(), vec![]));
    let anonymous = rpc.get_supply(GetSupplyRequest { id: created.id.clone() }).await.unwrap_err();
    assert_eq!(refusal(&anonymous).0, Code::Unauthenticated);
    // The steps other services ask for need role service.
    let step = ClaimStepRequest { claim_id: created.id.clone(), context: None };
    let forbidden = rpc.consume(with_token(&alice.access, step)).await.unwrap_err();
    assert_eq!(refusal(&forbidden), (Code::PermissionDenied, "FORBIDDEN".into(), vec![]));

    // Update at the current version; a stale version is refused with REST's code.
    let update = UpdateSupplyRequest {
        id: created.id.clone(),
        amount: Some("100".into()),
        status: Some("paused".into()),
        version: Some(1),
    };
    let updated = rpc.update_supply(with_token(&alice.access, update)).await.unwrap().into_inner();
    assert_eq!((updated.amount.as_str(), updated.status.as_str(), updated.version), ("100.000000", "paused", 2));
    let stale =
        UpdateSupplyRequest { id: created.id.clone(), amount: Some("5".into()), status: None, version: Some(1) };
    let stale = rpc.update_supply(with_token(&alice.access, stale)).await.unwrap_err();
    assert_eq!(refusal(&stale), (Code::FailedPrecondition, "VERSION_MISMATCH".into(), vec![]));

    // List: the caller's own, newest first, paged; another user's list is forbidden.
    let second = CreateSupplyRequest { currency: "ETH".into(), amount: "2".into() };
    let second = rpc.create_supply(with_token(&alice.access, second)).await.unwrap().into_inner();
    let page = ListSuppliesRequest { limit: Some(1), ..Default::default() };
    let page = rpc.list_supplies(with_token(&alice.access, page)).await.unwrap().into_inner();
    assert_eq!(page.items.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![second.id.clone()]);
    let next = ListSuppliesRequest { limit: Some(1), cursor: page.next_cursor.clone(), ..Default::default() };
    let next = rpc.list_supplies(with_token(&alice.access, next)).await.unwrap().into_inner();
    assert_eq!(next.items.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![created.id.clone()]);
    let theirs = ListSuppliesRequest { user_id: Some(alice.user_id.to_string()), ..Default::default() };
    let theirs = rpc.list_supplies(with_token(&bob.access, theirs)).await.unwrap_err();
    assert_eq!(refusal(&theirs).0, Code::PermissionDenied);

    // Delete; then it is gone.
    let delete = DeleteSupplyRequest { id: second.id.clone(), version: None };
    rpc.delete_supply(with_token(&alice.access, delete)).await.unwrap();
    let gone = rpc.get_supply(with_token(&alice.access, GetSupplyRequest { id: second.id.clone() })).await.unwrap_err();
    assert_eq!(refusal(&gone).0, Code::NotFound);

    // The same idempotency-key with the same request answers the first supply again.
    let keyed = || {
        let mut req = with_token(&alice.access, CreateSupplyRequest { currency: "USDC".into(), amount: "7".into() });
        req.metadata_mut().insert("idempotency-key", "grpc-key-1".parse().unwrap());
        req
    };
    let first = rpc.create_supply(keyed()).await.unwrap().into_inner();
    let again = rpc.create_supply(keyed()).await.unwrap().into_inner();
    assert_eq!(first.id, again.id);
    let all = ListSuppliesRequest { currency: Some("USDC".into()), ..Default::default() };
    let all = rpc.list_supplies(with_token(&alice.access, all)).await.unwrap().into_inner();
    assert_eq!(all.items.len(), 2, "one supply for the keyed request");
}

/// A process that runs the claim service without the order service, and is told nowhere to find
/// it, stops at start naming the setting.
#[test]
fn a_needed_service_neither_local_nor_configured_stops_the_start() {
    let dir = TempDir::new();
    let out = command(
        BIN,
        &dir.0,
        &[
            ("WALLETD_HTTP_ADDR", "127.0.0.1:0"),
            ("WALLETD_GRPC_ADDR", "127.0.0.1:0"),
            ("WALLETD_METRICS_ADDR", "127.0.0.1:0"),
        ],
    )
    .args(["serve", "--services", "claim,supply,wallet"])
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("WALLETD_ORDER_GRPC_URL"), "{err}");
}

/// The request id travels in `x-request-id` metadata both ways (the caller's, or a fresh one), and
/// the per-principal rate limit refuses over gRPC as over REST: RESOURCE_EXHAUSTED with
/// `RATE_LIMITED` in the details.
#[tokio::test]
async fn request_ids_and_rate_limits_hold_over_grpc() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.rate_limit = web::ratelimit::Rate { per_minute: 1, burst: 3 };
    })
    .await;
    let user = app.new_unfunded_user().await;
    let mut rpc = supplies(&app).await;

    let mut req = with_token(&user.access, ListSuppliesRequest::default());
    req.metadata_mut().insert("x-request-id", "grpc-test-request-1".parse().unwrap());
    let res = rpc.list_supplies(req).await.unwrap();
    assert_eq!(res.metadata().get("x-request-id").and_then(|v| v.to_str().ok()), Some("grpc-test-request-1"));
    let res = rpc.list_supplies(with_token(&user.access, ListSuppliesRequest::default())).await.unwrap();
    let fresh = res.metadata().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(uuid::Uuid::parse_str(&fresh).is_ok(), "a fresh request id: {fresh:?}");

    // The burst is spent within a few calls; the next is refused with REST's code.
    let mut refused = None;
    for _ in 0..5 {
        if let Err(status) = rpc.list_supplies(with_token(&user.access, ListSuppliesRequest::default())).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("the limit never refused");
    assert_eq!(refusal(&refused), (Code::ResourceExhausted, "RATE_LIMITED".into(), vec![]));
    assert!(refused.metadata().get("retry-after").is_some(), "{refused:?}");
}
