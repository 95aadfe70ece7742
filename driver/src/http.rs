//! A minimal HTTP/1.1 client (hyper) for the two HTTP services the driver talks to: the
//! Pushgateway (PUT) and Prometheus's query API (GET). Plain http:// only.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one request and returns the status and body. `path_and_query` is appended to the
/// URL's own path.
pub async fn send(method: Method, url: &str, path_and_query: &str, content_type: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("'{url}': only http:// URLs are supported"));
    }
    let host = uri.host().ok_or_else(|| format!("'{url}' has no host"))?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let path = format!("{}{path_and_query}", uri.path().trim_end_matches('/'));
    let stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| format!("{host}:{port}: connection timed out"))?
        .map_err(|e| format!("{host}:{port}: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, format!("{host}:{port}"))
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(hyper::body::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| format!("{host}:{port}: no answer within {} s", TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = tokio::time::timeout(TIMEOUT, response.into_body().collect())
        .await
        .map_err(|_| "body timed out".to_string())?
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok((status, body))
}
