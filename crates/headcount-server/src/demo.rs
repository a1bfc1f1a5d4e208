//! The demo page at `/`: the Svelte `RealtimePresence` example built from `web/`, embedded in
//! the binary (no npm at run time).
//!
//! The build lives in `demo-dist/` next to this crate's `src/` and is committed; `web/` has the
//! source and a check that the committed build matches it. The page connects to the server it
//! came from. It gets the anon key from the page itself: the built `index.html` holds an empty
//! JSON data block, `<script id="headcount-config" type="application/json">{}</script>`, which
//! [`index`] fills with `{"anonKey":"..."}` on every request.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use sha1::{Digest, Sha1};

use crate::auth;
use crate::hub::Hub;

/// The built page. It must contain [`CONFIG_BLOCK`] exactly once.
const INDEX_HTML: &str = include_str!("../demo-dist/index.html");

/// The empty configuration block of the built page, replaced when the page is served.
const CONFIG_BLOCK: &str = r#"<script id="headcount-config" type="application/json">{}</script>"#;

/// The page's other files, by URL path: (path, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/assets/demo.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../demo-dist/assets/demo.js"),
    ),
    (
        "/assets/demo.css",
        "text/css; charset=utf-8",
        include_bytes!("../demo-dist/assets/demo.css"),
    ),
];

/// Lifetime of the anon key minted for the page when the configuration has none.
const MINTED_KEY_LIFETIME_SECS: i64 = 24 * 3600;

/// The routes of the demo: `/`, `/index.html` and the page's assets.
pub fn routes() -> Router<Arc<Hub>> {
    let mut router = Router::new()
        .route("/", get(index))
        .route("/index.html", get(index));
    for (i, (path, _, _)) in ASSETS.iter().enumerate() {
        router = router.route(path, get(move |headers: HeaderMap| asset(i, headers)));
    }
    router
}

/// The anon key the page uses: the configured one, or one minted now with the server's secret.
fn anon_key(hub: &Hub) -> String {
    match &hub.config.anon_key {
        Some(key) => key.clone(),
        None => {
            let now = crate::clock::unix_s();
            auth::sign(
                &hub.config.jwt_secret,
                "anon",
                None,
                now,
                now + MINTED_KEY_LIFETIME_SECS,
            )
        }
    }
}

/// The page with its configuration filled in. `<` is escaped so that no value can close the
/// script element.
fn render_index(anon_key: &str) -> String {
    let config = serde_json::json!({ "anonKey": anon_key })
        .to_string()
        .replace('<', "\\u003c");
    let block = CONFIG_BLOCK.replacen("{}", &config, 1);
    INDEX_HTML.replacen(CONFIG_BLOCK, &block, 1)
}

/// `GET /`: the page, never cached (it carries this run's key).
async fn index(State(hub): State<Arc<Hub>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        render_index(&anon_key(&hub)),
    )
        .into_response()
}

/// The entity tag of each asset, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, _, bytes)| {
                let digest = Sha1::digest(bytes);
                let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12]);
                format!("\"{tag}\"")
            })
            .collect()
    })
}

/// `GET /assets/...`: the file, revalidated by entity tag (the names carry no hash).
async fn asset(i: usize, headers: HeaderMap) -> Response {
    let (_, content_type, bytes) = ASSETS[i];
    let etag = &etags()[i];
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::ETAG,
            HeaderValue::from_str(etag).expect("an ASCII entity tag"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if not_modified {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_page_has_one_config_block() {
        assert_eq!(INDEX_HTML.matches(CONFIG_BLOCK).count(), 1);
    }

    #[test]
    fn the_key_is_written_into_the_page() {
        let page = render_index("a.b-c_d");
        assert!(page.contains(
            r#"<script id="headcount-config" type="application/json">{"anonKey":"a.b-c_d"}</script>"#
        ));
        assert!(!page.contains(CONFIG_BLOCK));
    }

    #[test]
    fn no_value_can_close_the_script_element() {
        let page = render_index("</script><script>alert(1)</script>");
        assert_eq!(
            page.matches("</script>").count(),
            INDEX_HTML.matches("</script>").count()
        );
    }

    async fn get(path: &str, headers: &[(&str, &str)]) -> Response {
        use tower::ServiceExt;
        let mut config = crate::Config::new("demo-test-secret");
        config.anon_key = Some("the-anon-key".to_owned());
        let app = routes().with_state(Arc::new(Hub::new(config)));
        let mut request = axum::http::Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(axum::body::Body::empty()).expect("a request");
        app.oneshot(request).await.expect("infallible")
    }

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        String::from_utf8(bytes.to_vec()).expect("UTF-8")
    }

    #[tokio::test]
    async fn the_page_is_served_with_the_configured_key() {
        let response = get("/", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert!(
            body(response)
                .await
                .contains(r#"{"anonKey":"the-anon-key"}"#)
        );
    }

    #[tokio::test]
    async fn assets_have_their_content_type_and_revalidate() {
        let response = get("/assets/demo.js", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let etag = response.headers()[header::ETAG]
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert_eq!(body(response).await.len(), ASSETS[0].2.len());

        let response = get("/assets/demo.css", &[]).await;
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );

        let response = get("/assets/demo.js", &[("if-none-match", &etag)]).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        let response = get("/assets/demo.js", &[("if-none-match", "\"other\"")]).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn a_key_is_minted_when_none_is_configured() {
        let hub = Hub::new(crate::Config::new("demo-test-secret"));
        let key = anon_key(&hub);
        let verifier = auth::Verifier::new("demo-test-secret");
        let claims = verifier.verify(&key, crate::clock::unix_s());
        assert!(claims.is_ok(), "{claims:?}");
    }

    #[test]
    fn every_built_file_is_served() {
        let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo-dist");
        let mut files = Vec::new();
        let mut dirs = vec![dist.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).expect("demo-dist is readable") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let rel = path.strip_prefix(&dist).expect("inside demo-dist");
                    files.push(format!("/{}", rel.to_string_lossy().replace('\\', "/")));
                }
            }
        }
        files.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|(p, _, _)| p.to_string()).collect();
        served.push("/index.html".to_owned());
        served.sort();
        assert_eq!(files, served, "demo-dist and the embedded files differ");
    }
}
