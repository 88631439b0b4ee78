//! OpenTelemetry tracing (`WALLETD_OTLP_ENDPOINT`): one claim is one trace, from the request (which
//! continues the client's `traceparent`) through the outbox row (and, with Kafka, the message's
//! headers) to the consumer that processes it. The spans are read by an OTLP receiver in the test
//! kit, as the real binary exports them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::time::Duration;

use rstest::rstest;
use serde_json::Value;
use testkit::otlp::{OtlpReceiver, ReceivedSpan};
use testkit::process::{WalletdProcess, admin_token, fund_at, place_order, shopper, sign_in};
use testkit::{TempDir, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_walletd");

#[rstest]
#[case::embedded_log(false)]
#[case::kafka(true)]
#[tokio::test(flavor = "multi_thread")]
async fn one_claim_is_one_trace_from_the_request_through_its_processing(#[case] kafka: bool) {
    let receiver = OtlpReceiver::start().await;
    let dir = TempDir::new();
    let broker = kafka.then(testkit::kafka::PrivateKafka::start);
    let brokers = broker.as_ref().map(testkit::kafka::PrivateKafka::brokers).unwrap_or_default();
    let mut envs = vec![("WALLETD_OTLP_ENDPOINT", receiver.endpoint.as_str())];
    if kafka {
        envs.push(("WALLETD_KAFKA_BROKERS", brokers.as_str()));
    }
    let server = WalletdProcess::start(BIN, &dir.0, &envs);
    let (http, base) = (reqwest::Client::new(), server.base.clone());
    let admin = admin_token(BIN, &dir.0, &envs);
    let (buyer, buyer_id) = sign_in(&http, &base).await;
    fund_at(&http, &base, &admin, &buyer_id, "USDC", "100").await;
    let (claimer, _) = shopper(&http, &base, "50").await;
    let order = place_order(&http, &base, &buyer, "5").await;

    // The client's trace: walletd's request span is a child of the client's span.
    let (trace_id, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let res = http
        .post(format!("{base}/v1/orders/{order}/claim"))
        .bearer_auth(&claimer)
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let claim: Value = res.json().await.unwrap();
    let claim_id = claim["id"].as_str().unwrap().to_string();

    let of_trace =
        || -> Vec<ReceivedSpan> { receiver.spans().into_iter().filter(|s| s.trace_id == trace_id).collect() };
    let attribute = |s: &ReceivedSpan, key: &str| s.attributes.get(key).cloned().unwrap_or_default();
    let is_processing = |s: &ReceivedSpan| s.name == "converge" && s.attributes.get("claim.id") == Some(&claim_id);
    let is_event = |s: &ReceivedSpan| {
        s.name == "event"
            && attribute(s, "event.type") == "order.claimed"
            && attribute(s, "consumer.group") == claim::processor::GROUP
    };
    // Spans arrive in batches, a span when it ends: wait for the request's, the event's (which ends
    // after the processing inside it) and the processing's.
    let complete = wait_until(Duration::from_secs(60), || async {
        let spans = of_trace();
        spans.iter().any(is_processing) && spans.iter().any(is_event) && spans.iter().any(|s| s.name == "request")
    })
    .await;
    let spans = of_trace();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert!(complete, "the trace never had its request, event and processing spans; it has {names:?}");

    let request = spans
        .iter()
        .find(|s| {
            s.name == "request" && s.attributes.get("http.route").map(String::as_str) == Some("/v1/orders/{id}/claim")
        })
        .unwrap_or_else(|| panic!("no request span in the trace: {names:?}"));
    assert_eq!(request.parent_span_id, client_span, "the request continues the client's span");
    assert!(request.attributes.get("request.id").is_some_and(|id| !id.is_empty()), "{:?}", request.attributes);
    let event = spans.iter().find(|s| is_event(s)).unwrap();
    assert_eq!(
        attribute(event, "correlation.id"),
        attribute(request, "request.id"),
        "the event carries the request's id"
    );
    let processing = spans.iter().find(|s| is_processing(s)).unwrap();
    assert_eq!(processing.parent_span_id, event.span_id, "the processing runs inside the event's span");
    // The event's span descends from the request's: follow the parents up from the event.
    let mut at = event.clone();
    let mut hops = 0;
    while at.span_id != request.span_id {
        at = spans
            .iter()
            .find(|s| s.span_id == at.parent_span_id)
            .unwrap_or_else(|| panic!("the event's span does not descend from the request's: {spans:#?}"))
            .clone();
        hops += 1;
        assert!(hops < 20, "a cycle in {spans:#?}");
    }
    // Store calls are spans of their own, in the request and in the processing.
    let descends_from = |s: &ReceivedSpan, ancestor: &ReceivedSpan| {
        let mut at = s.clone();
        for _ in 0..20 {
            if at.parent_span_id == ancestor.span_id {
                return true;
            }
            match spans.iter().find(|p| p.span_id == at.parent_span_id) {
                Some(p) => at = p.clone(),
                None => return false,
            }
        }
        false
    };
    let stores: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == "store").collect();
    assert!(
        stores.iter().any(|s| attribute(s, "db.operation").starts_with("claim.") && descends_from(s, request)),
        "no claim store call under the request: {stores:#?}"
    );
    assert!(stores.iter().any(|s| descends_from(s, event)), "no store call under the processing: {stores:#?}");

    // gRPC continues the caller's trace as HTTP does: its request span, and the call's span in it.
    let (grpc_trace, grpc_parent) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let channel = tonic::transport::Endpoint::from_shared(server.grpc.clone()).unwrap().connect().await.unwrap();
    let mut supplies = rpc::v1::supply_service_client::SupplyServiceClient::new(channel);
    let mut req = tonic::Request::new(rpc::v1::ListSuppliesRequest::default());
    req.metadata_mut().insert("authorization", format!("Bearer {claimer}").parse().unwrap());
    req.metadata_mut().insert("traceparent", format!("00-{grpc_trace}-{grpc_parent}-01").parse().unwrap());
    supplies.list_supplies(req).await.unwrap();
    let named = |name: &str| receiver.spans().into_iter().find(|s| s.trace_id == grpc_trace && s.name == name);
    let arrived =
        wait_until(Duration::from_secs(60), || async { named("grpc").is_some() && named("request").is_some() });
    assert!(arrived.await, "the gRPC call's spans did not arrive");
    let (outer, call) = (named("request").unwrap(), named("grpc").unwrap());
    assert_eq!(outer.parent_span_id, grpc_parent, "the call continues the caller's span");
    assert_eq!(call.parent_span_id, outer.span_id);
    assert_eq!(attribute(&call, "rpc.method"), "/walletd.v1.SupplyService/ListSupplies");
    assert!(!attribute(&call, "request.id").is_empty(), "the call's span carries the request id");
    drop(server);
}
