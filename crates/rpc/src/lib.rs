//! The walletd.v1 gRPC protocol (compiled from `proto/` by protox, no protoc) and the gRPC edge
//! every service's server shares: the caller and request id of a call, request fields parsed
//! with the field named when they are bad, errors as gRPC status codes with the stable error code
//! (`google.rpc.ErrorInfo`) and field violations (`google.rpc.BadRequest`) in the details,
//! per-RPC metrics, health and reflection.
//!
//! The token check, rate limits and `idempotency-key` are the REST stack's own middleware, run
//! around the gRPC routes too (walletd's wiring); [`problem_as_status`] turns what they refuse into
//! a gRPC status.

pub mod client;
mod edge;

pub use edge::*;

/// The generated messages, servers and clients of package `walletd.v1`.
#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("walletd.v1");
}

/// The encoded file descriptor set of `walletd.v1`, for server reflection.
pub const DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("walletd_v1_descriptor");
