//! Options from the query string (and form fields), with the CLI's names: `class`, `method`, `layer`,
//! `colormap`, `alpha`, `threshold`, … Several values as repeated parameters or comma lists; names and values
//! are percent-decoded (`gradcam%2B%2B`); `+` is a plus sign (`method=gradcam++`), a space is `%20`.

use crate::error::ApiError;
use percent_encoding::percent_decode_str;

/// The decoded (name, value) pairs of a query string; `_` in names read as `-` (`save_npy` = `save-npy`).
pub fn parse(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = vec![];
    for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let dec = |s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| ApiError::bad(format!("query parameter `{part}`: not UTF-8 once percent-decoded")))
        };
        out.push((normalize(&dec(k)?), dec(v)?));
    }
    Ok(out)
}

pub fn normalize(name: &str) -> String {
    name.trim().replace('_', "-").to_ascii_lowercase()
}

/// The options of a request, checked against the names an endpoint takes.
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn new(
        mut pairs: Vec<(String, String)>,
        form: Vec<(String, String)>,
        allowed: &[&str],
    ) -> Result<Self, ApiError> {
        pairs.extend(form.into_iter().map(|(k, v)| (normalize(&k), v)));
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad(format!("unknown parameter `{k}`; this endpoint takes: {}", allowed.join(", "))));
        }
        Ok(Params { pairs })
    }

    /// Every value of `name`, comma lists split, blanks dropped.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_string()).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The one value of `name` (an error if given twice with different values).
    pub fn one(&self, name: &str) -> Result<Option<String>, ApiError> {
        let vals: Vec<&String> = self.pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v).collect();
        match vals.as_slice() {
            [] => Ok(None),
            [v, rest @ ..] if rest.iter().all(|r| r == v) => Ok(Some(v.trim().to_string())),
            _ => Err(ApiError::bad(format!("`{name}` given {} times with different values; give it once", vals.len()))),
        }
    }

    pub fn number(&self, name: &str, default: f32) -> Result<f32, ApiError> {
        match self.one(name)? {
            None => Ok(default),
            Some(v) => v
                .parse::<f32>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| ApiError::bad(format!("{name}={v}: expected a number in [0, 1]"))),
        }
    }

    pub fn count(&self, name: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.one(name)? {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| ApiError::bad(format!("{name}={v}: expected a whole number from 1 to {max}"))),
        }
    }

    /// A flag: absent is false; present with no value, `1`, `true`, `yes` or `on` is true; `0`, `false`, `no`,
    /// `off` false.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.one(name)?.as_deref() {
            None => Ok(false),
            Some("" | "1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(ApiError::bad(format!("{name}={v}: expected true or false"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_keeps_plus_and_splits_lists() {
        let q = parse(Some("method=gradcam%2B%2B,layercam&method=gradcam++&class=Egyptian%20cat&save_npy")).unwrap();
        let p = Params::new(q, vec![], &["method", "class", "save-npy"]).unwrap();
        assert_eq!(p.list("method"), ["gradcam++", "layercam", "gradcam++"]);
        assert_eq!(p.one("class").unwrap().as_deref(), Some("Egyptian cat"));
        assert!(p.flag("save-npy").unwrap());
        assert!(Params::new(parse(Some("colour=jet")).unwrap(), vec![], &["colormap"]).is_err());
        assert!(parse(Some("class=%FF")).is_err());
    }
}
