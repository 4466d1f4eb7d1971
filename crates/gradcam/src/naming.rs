//! Output names: every input of a run gets a prefix for its files that is unique by construction
//! (case-insensitively, for file systems that fold case), short enough for any file system, and
//! deterministic (the same inputs give the same names on every run, so a rerun replaces its files in place).
//!
//! The prefix is the input's file stem with every character that is not a letter, a digit, `-`, `_` or `.`
//! replaced by `_`. Inputs whose stems clash (`a/cat.png`, `b/cat.jpg`) are told apart by a short hash of
//! their path as given (`cat-1f3a9c02`), never by a counter that a real file name (`cat-2.png`) could match.
//! A stem longer than [`MAX_STEM_BYTES`] is cut at a character boundary and ends with a hash of the whole.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The longest prefix kept from a file stem, in bytes: with the class, method and kind appended, output names
/// stay far below the 255 bytes file systems allow.
pub const MAX_STEM_BYTES: usize = 96;

fn os_bytes(s: &OsStr) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        s.as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        s.to_string_lossy().into_owned().into_bytes()
    }
}

fn hex_hash(bytes: &[u8], len: usize) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect::<String>()[..len].to_string()
}

/// The file-name-safe stem of an input path, within [`MAX_STEM_BYTES`].
pub fn stem_of(path: &Path) -> String {
    let raw = path.file_stem().unwrap_or_default();
    let mut stem: String =
        raw.to_string_lossy().chars().map(|c| if c.is_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    // no hidden output files, no `..`
    if stem.starts_with('.') {
        stem.replace_range(..1, "_");
    }
    if stem.is_empty() {
        stem = "image".into();
    }
    if stem.len() > MAX_STEM_BYTES {
        let mut cut = MAX_STEM_BYTES - 9;
        while !stem.is_char_boundary(cut) {
            cut -= 1;
        }
        stem = format!("{}-{}", &stem[..cut], hex_hash(&os_bytes(raw), 8));
    }
    stem
}

/// The path's bytes in base64, where its displayed form is lossy (not UTF-8); None where the display is exact.
pub fn lossless_bytes(path: &Path) -> Option<String> {
    use base64::Engine;
    if path.to_str().is_some() {
        return None;
    }
    Some(base64::engine::general_purpose::STANDARD.encode(os_bytes(path.as_os_str())))
}

/// The prefixes of a run's inputs, and the inputs themselves (outputs never replace an input).
#[derive(Clone, Debug, Default)]
pub struct Namer {
    prefixes: Vec<String>,
    inputs: HashSet<PathBuf>,
}

impl Namer {
    /// Names for `inputs`, in their order. Which name an input gets depends only on the set of inputs.
    pub fn new(inputs: &[PathBuf]) -> Self {
        let stems: Vec<String> = inputs.iter().map(|p| stem_of(p)).collect();
        let mut count: HashMap<String, usize> = HashMap::new();
        for s in &stems {
            *count.entry(s.to_lowercase()).or_default() += 1;
        }
        let path_hash = |i: usize, len: usize| hex_hash(&os_bytes(inputs[i].as_os_str()), len);
        let mut prefixes: Vec<String> = stems
            .iter()
            .enumerate()
            .map(|(i, s)| if count[&s.to_lowercase()] == 1 { s.clone() } else { format!("{s}-{}", path_hash(i, 8)) })
            .collect();
        // a hashed name can still meet another input's plain stem (`cat-1f3a9c02.png`) or, for the same path
        // given twice, its twin: longer hashes, then the position, until every name is unique
        for round in 0..3 {
            let mut seen: HashMap<String, usize> = HashMap::new();
            let mut clash = vec![];
            for (i, p) in prefixes.iter().enumerate() {
                if let Some(&j) = seen.get(&p.to_lowercase()) {
                    clash.push(j);
                    clash.push(i);
                } else {
                    seen.insert(p.to_lowercase(), i);
                }
            }
            if clash.is_empty() {
                break;
            }
            clash.sort_unstable();
            clash.dedup();
            for i in clash {
                prefixes[i] = match round {
                    0 => format!("{}-{}", stems[i], path_hash(i, 16)),
                    1 => format!("{}-{}", stems[i], path_hash(i, 64)),
                    _ => format!("{}-{}-{i}", stems[i], path_hash(i, 8)),
                };
            }
        }
        Namer { prefixes, inputs: inputs.iter().filter_map(|p| p.canonicalize().ok()).collect() }
    }

    /// The prefix of the `i`-th input.
    pub fn prefix(&self, i: usize) -> &str {
        self.prefixes.get(i).map_or("image", String::as_str)
    }

    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// `path`, or a variant of it that is not one of the inputs.
    pub fn safe(&self, path: PathBuf) -> PathBuf {
        let canon =
            path.parent().and_then(|p| p.canonicalize().ok()).map(|p| p.join(path.file_name().unwrap_or_default()));
        match canon {
            Some(c) if self.inputs.contains(&c) => path
                .with_extension(format!("out.{}", path.extension().map(|e| e.to_string_lossy()).unwrap_or_default())),
            _ => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(paths: &[&str]) -> Vec<String> {
        Namer::new(&paths.iter().map(PathBuf::from).collect::<Vec<_>>()).prefixes().to_vec()
    }

    #[test]
    fn plain_stems_when_unique() {
        assert_eq!(names(&["a/cat.png", "b/dog.jpg"]), ["cat", "dog"]);
    }

    #[test]
    fn clashing_stems_are_told_apart_by_their_paths_not_a_counter() {
        let n = names(&["a/cat.png", "b/cat.png", "c/cat-2.png", "a/cat.jpg", "d/CAT.png"]);
        let lower: HashSet<String> = n.iter().map(|s| s.to_lowercase()).collect();
        assert_eq!(lower.len(), n.len(), "unique: {n:?}");
        assert_eq!(n[2], "cat-2", "a real name keeps its stem");
        assert!(n[0].starts_with("cat-") && n[0].len() == 12, "{n:?}");
        // deterministic and independent of the order
        let again = names(&["d/CAT.png", "a/cat.jpg", "c/cat-2.png", "b/cat.png", "a/cat.png"]);
        assert_eq!(again[4], n[0]);
        assert_eq!(again[3], n[1]);
    }

    #[test]
    fn a_plain_stem_equal_to_a_generated_name_is_resolved() {
        let first = names(&["a/x.png", "b/x.png"]);
        let fake = format!("c/{}.png", first[0]);
        let n = names(&["a/x.png", "b/x.png", &fake]);
        let lower: HashSet<String> = n.iter().map(|s| s.to_lowercase()).collect();
        assert_eq!(lower.len(), 3, "{n:?}");
        // the same path twice
        let n = names(&["a/x.png", "a/x.png"]);
        assert_ne!(n[0], n[1]);
    }

    #[test]
    fn long_and_odd_names_are_shortened_and_cleaned() {
        let long = "猫".repeat(80); // 240 bytes
        let n = names(&[&format!("{long}.png"), &format!("{long}x.png"), "../.hidden.png", "we ird/a b?.png"]);
        assert!(n[0].len() <= MAX_STEM_BYTES && n[1].len() <= MAX_STEM_BYTES, "{n:?}");
        assert_ne!(n[0], n[1]);
        assert!(n[0].starts_with("猫猫"));
        assert_eq!(n[2], "_hidden");
        assert_eq!(n[3], "a_b_");
    }
}
