//! What the benchmark tools share: a small API client that signs in with fresh keys, percentiles,
//! and a process's peak memory.

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use identity::eth::{LocalWallet, to_checksum};

pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let res = req.send().await?;
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.send(self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> anyhow::Result<Value> {
        let (status, body) = self.send(self.http.get(format!("{}{path}", self.base)).bearer_auth(token)).await?;
        ensure!(status == 200, "GET {path}: {status} {body}");
        Ok(body)
    }

    pub async fn sign_in(&self) -> anyhow::Result<String> {
        let wallet = LocalWallet::random()?;
        let (_, nonce) = self
            .send(
                self.http
                    .post(format!("{}/v1/auth/nonce", self.base))
                    .json(&json!({"address": to_checksum(&wallet.address())})),
            )
            .await?;
        let message = nonce["message"].as_str().context("no nonce message")?;
        let body = json!({"message": message, "signature": wallet.sign_message(message)?});
        let (status, login) = self.send(self.http.post(format!("{}/v1/auth/login", self.base)).json(&body)).await?;
        ensure!(status == 200, "login: {status} {login}");
        Ok(login["access_token"].as_str().context("no token")?.to_string())
    }

    /// `n` new users signed in, 16 at a time; their access tokens.
    pub async fn sign_in_many(&self, n: usize) -> anyhow::Result<Vec<String>> {
        use futures::StreamExt;
        futures::stream::iter(0..n)
            .map(|_| self.sign_in())
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// Every item of a list endpoint, following cursors.
    pub async fn all(&self, path: &str, token: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let page = match &cursor {
                Some(c) => self.get(&format!("{path}{sep}limit=500&cursor={c}"), token).await?,
                None => self.get(&format!("{path}{sep}limit=500"), token).await?,
            };
            out.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(out),
            }
        }
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A process's peak resident memory (`VmHWM`), as Linux reports it.
pub fn peak_memory(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak = status.lines().find(|l| l.starts_with("VmHWM")).unwrap_or("VmHWM: ?");
    peak.trim_start_matches("VmHWM:").trim().to_string()
}
