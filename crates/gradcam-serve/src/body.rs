//! Request bodies: read up to a limit, checked while reading (and from `Content-Length` before); a body over
//! the limit is read on and thrown away, up to a bounded amount, before the 413 goes out, so that a client that
//! sends its whole body before reading the answer sees the 413 rather than a reset connection. Past that
//! amount the answer goes out at once and the connection is closed.
//!
//! A `multipart/form-data` body carries the image as its file part (or a part named `image` or `file`) and may
//! carry options as text parts, with the query's names.

use crate::error::ApiError;
use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// What a request sent: the image's bytes, its name (a multipart file name, else `upload`), and options from
/// a form's text parts.
pub struct Upload {
    pub image: Bytes,
    pub name: String,
    pub options: Vec<(String, String)>,
}

/// Read the body, at most `limit` bytes; past it, up to `drain` more are read and dropped before the 413.
pub async fn read_limited(headers: &HeaderMap, body: Body, limit: usize, drain: usize) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let over = |n: u64| {
        ApiError::too_large(format!(
            "the request body is {n} bytes or more, over the limit of {limit} bytes (the server's --max-body)"
        ))
    };
    if let Some(n) = declared {
        if n > (limit + drain) as u64 {
            // too much to read and throw away: answer now and close the connection
            return Err(ApiError { close: true, ..over(n) });
        }
    }
    let mut body = body;
    let mut buf = BytesMut::with_capacity(declared.map_or(64 << 10, |n| n.min(limit as u64) as usize));
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len() as u64;
        if seen > (limit + drain) as u64 {
            return Err(ApiError { close: true, ..over(seen) });
        }
        if seen <= limit as u64 {
            buf.extend_from_slice(&data);
        } else if !buf.is_empty() {
            buf = BytesMut::new(); // over the limit: what was kept goes, the rest is read and dropped
        }
    }
    if seen > limit as u64 {
        return Err(over(seen));
    }
    Ok(buf.freeze())
}

/// The image (and form options) of a request whose body has been read.
pub async fn upload(headers: &HeaderMap, body: Bytes) -> Result<Upload, ApiError> {
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ctype.trim_start().to_ascii_lowercase().starts_with("multipart/") {
        if body.is_empty() {
            return Err(ApiError::bad(
                "the request has no body: send the image as the body, or as the file of a multipart/form-data form",
            ));
        }
        return Ok(Upload { image: body, name: "upload".into(), options: vec![] });
    }
    let boundary = multer::parse_boundary(ctype)
        .map_err(|e| ApiError::bad(format!("Content-Type `{ctype}`: {e}; expected multipart/form-data; boundary=…")))?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut image: Option<(Bytes, String)> = None;
    let mut options = vec![];
    let bad = |e: multer::Error| ApiError::bad(format!("the multipart form cannot be read: {e}"));
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_string();
        let file = field.file_name().map(str::to_string);
        if file.is_some() || name == "image" || name == "file" {
            let data = field.bytes().await.map_err(bad)?;
            if image.is_some() {
                return Err(ApiError::bad(format!(
                    "the form has more than one file (a second one in part `{name}`); send one image per request"
                )));
            }
            let shown = file.filter(|f| !f.is_empty()).unwrap_or_else(|| "upload".into());
            image = Some((data, shown));
        } else {
            let text = field.text().await.map_err(bad)?;
            options.push((name, text));
        }
    }
    match image {
        Some((data, _)) if data.is_empty() => Err(ApiError::bad("the form's image is empty (0 bytes)")),
        Some((image, name)) => Ok(Upload { image, name, options }),
        None => Err(ApiError::bad("the multipart form has no image: add a file part (or a part named `image`)")),
    }
}
