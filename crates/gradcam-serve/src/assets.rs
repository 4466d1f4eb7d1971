//! The page and the OpenAPI document, built into the binary (no build step at run time).

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;

pub const INDEX_HTML: &str = include_str!("../assets/index.html");
pub const APP_JS: &str = include_str!("../assets/app.js");
pub const APP_CSS: &str = include_str!("../assets/app.css");
pub const OPENAPI_JSON: &str = include_str!("../assets/openapi.json");

/// A file of the page, with a policy that lets it load only its own scripts and styles (pictures may be
/// `data:` and `blob:` URLs: the API's answers and the user's own photo).
pub fn page(ctype: &'static str, text: &'static str) -> Response {
    let mut r = Response::new(Body::from(text));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; style-src 'self'; \
             script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The media type of an example photo, by its extension; None for a file that is not an image.
pub fn image_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "webp" => "image/webp",
        _ => return None,
    })
}
