//! The driver's HTTP client for the two HTTP services it talks to: the Pushgateway (PUT) and
//! Prometheus's query API (GET). reqwest with rustls, the same stack `object_store` uses for
//! remote data, so http:// and https:// both work.

use std::sync::OnceLock;
use std::time::Duration;

pub use reqwest::Method;

const TIMEOUT: Duration = Duration::from_secs(10);

fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| reqwest::Client::builder().timeout(TIMEOUT).build().map_err(|e| format!("cannot start an HTTP client: {e}")))
        .as_ref()
        .map_err(Clone::clone)
}

/// Sends one request and returns the status and body. `path_and_query` is appended to the
/// URL's own path.
pub async fn send(method: Method, url: &str, path_and_query: &str, content_type: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
    let base = url::Url::parse(url).map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(format!("'{url}': only http:// and https:// URLs are supported"));
    }
    let target = format!("{}{path_and_query}", url.trim_end_matches('/'));
    let response = client()?
        .request(method, &target)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .map_err(|e| describe(url, &e))?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| describe(url, &e))?.to_vec();
    Ok((status, body))
}

/// reqwest's error with its causes (the top level alone says only "error sending request").
fn describe(url: &str, e: &reqwest::Error) -> String {
    let text = if e.is_timeout() { format!("{url}: no answer within {} s", TIMEOUT.as_secs()) } else { format!("{url}: {e}") };
    crate::error::with_causes(text, e)
}
