//! `GET /console`: the web console, built from `host/server/console` (Vite,
//! TypeScript) into `console/dist`, which is committed and embedded here, so
//! a host built with Rust alone serves it and nothing is fetched at run time.
//! The page is a single document with hash routes; its assets carry a
//! content hash in their names, so they may be cached for good.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ApiError;
use crate::openapi;

#[derive(rust_embed::Embed)]
#[folder = "console/dist"]
// Missing only before the first build of the console; the test below fails then.
#[allow_missing = true]
struct Built;

fn file(path: &str, cache: &'static str) -> Response {
    match Built::get(path) {
        Some(file) => {
            let mime = file.metadata.mimetype();
            let mut response = (StatusCode::OK, file.data.into_owned()).into_response();
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(mime) {
                headers.insert(header::CONTENT_TYPE, value);
            }
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            response
        }
        None => ApiError::not_found(format!("the console has no file {path:?}")).into_response(),
    }
}

/// The console lives under `/console/`.
#[utoipa::path(get, path = "/console", tag = openapi::HOST, responses(
    (status = 308, description = "To `/console/`"),
))]
pub(super) async fn enter() -> Redirect {
    Redirect::permanent("/console/")
}

/// The console's page.
#[utoipa::path(get, path = "/console/", tag = openapi::HOST, responses(
    (status = 200, description = "The web console (HTML)", body = String, content_type = "text/html"),
))]
pub(super) async fn index() -> Response {
    file("index.html", "no-cache")
}

/// The console's page, by its file name.
#[utoipa::path(get, path = "/console/index.html", tag = openapi::HOST, responses(
    (status = 200, description = "The web console (HTML)", body = String, content_type = "text/html"),
))]
pub(super) async fn index_html() -> Response {
    file("index.html", "no-cache")
}

/// The console's scripts, styles and images.
#[utoipa::path(get, path = "/console/assets/{file}", tag = openapi::HOST,
    params(("file" = String, Path, description = "an asset's name, as the page refers to it")),
    responses(
        (status = 200, description = "The asset, with its content type (JavaScript, CSS)", body = String, content_type = "*/*"),
        (status = 404, description = "No such asset", body = crate::error::ErrorBody),
    ))]
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    file(&format!("assets/{name}"), "public, max-age=31536000, immutable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_console_is_embedded_with_its_assets() {
        let index = Built::get("index.html").expect("console/dist/index.html is built and committed");
        let html = String::from_utf8_lossy(&index.data);
        let assets: Vec<String> = Built::iter().filter(|name| name.starts_with("assets/")).map(Into::into).collect();
        assert!(!assets.is_empty(), "the console has scripts");
        for asset in &assets {
            assert!(html.contains(&format!("/console/{asset}")), "index.html refers to {asset}");
        }
    }
}
