//! A small HTTP client for the admin and data APIs.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// A small blocking-free HTTP helper around reqwest.
#[derive(Debug, Clone, Default)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    /// A client with a short timeout, so a stopped process fails a call instead of
    /// hanging it.
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Self { client }
    }

    /// A client that trusts only the CA in `ca` (PEM), for a TLS admin HTTP.
    pub fn with_ca(ca: &Path) -> Self {
        let pem = std::fs::read(ca).expect("read CA");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA pem"))
            .build()
            .expect("client");
        Self { client }
    }

    /// Sends a request; returns the status and the JSON body (`Null` if none). A
    /// transport failure fails the test, naming the call.
    async fn send(&self, what: &str, url: &str, req: reqwest::RequestBuilder) -> (u16, Value) {
        let (code, body, _) = self.send_with_headers(what, url, req).await;
        (code, body)
    }

    /// GET.
    pub async fn get(&self, url: &str) -> (u16, Value) {
        self.send("GET", url, self.client.get(url)).await
    }

    /// GET, with the reply's headers (e.g. which metasrv answered).
    pub async fn get_with_headers(&self, url: &str) -> (u16, Value, reqwest::header::HeaderMap) {
        self.send_with_headers("GET", url, self.client.get(url))
            .await
    }

    /// POST JSON, with the reply's headers.
    pub async fn post_with_headers(
        &self,
        url: &str,
        body: &Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        self.send_with_headers("POST", url, self.client.post(url).json(body))
            .await
    }

    async fn send_with_headers(
        &self,
        what: &str,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what} {url}: {e}"));
        let headers = resp.headers().clone();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
            headers,
        )
    }

    /// GET a text body (e.g. Prometheus `/metrics`).
    pub async fn get_text(&self, url: &str) -> (u16, String) {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let code = resp.status().as_u16();
        (code, resp.text().await.unwrap_or_default())
    }

    /// POST JSON.
    pub async fn post(&self, url: &str, body: &Value) -> (u16, Value) {
        self.send("POST", url, self.client.post(url).json(body))
            .await
    }

    /// PUT a text body.
    pub async fn put(&self, url: &str, body: &str) -> (u16, Value) {
        self.send("PUT", url, self.client.put(url).body(body.to_string()))
            .await
    }

    /// DELETE.
    pub async fn delete(&self, url: &str) -> (u16, Value) {
        self.send("DELETE", url, self.client.delete(url)).await
    }

    /// Writes a row to a datanode.
    pub async fn write_row(&self, node: &str, region: u64, key: &str, value: &str) -> (u16, Value) {
        self.put(&format!("{node}/regions/{region}/rows/{key}"), value)
            .await
    }

    /// Writes a row; `None` when the node did not answer (stopped, gone): for probes
    /// that expect some nodes to be unreachable.
    pub async fn try_write_row(
        &self,
        node: &str,
        region: u64,
        key: &str,
        value: &str,
    ) -> Option<u16> {
        self.try_write_row_within(node, region, key, value, Duration::from_secs(2))
            .await
    }

    /// As [`try_write_row`](Self::try_write_row), waiting at most `within` for the answer
    /// (a write queued on a stopped node is answered when it resumes).
    pub async fn try_write_row_within(
        &self,
        node: &str,
        region: u64,
        key: &str,
        value: &str,
        within: Duration,
    ) -> Option<u16> {
        let url = format!("{node}/regions/{region}/rows/{key}");
        self.client
            .put(&url)
            .timeout(within)
            .body(value.to_string())
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// Reads a row from a datanode.
    pub async fn read_row(&self, node: &str, region: u64, key: &str) -> (u16, Value) {
        self.get(&format!("{node}/regions/{region}/rows/{key}"))
            .await
    }
}
