//! Class names: the 1,000 ImageNet classes (torchvision's names) ship with the library; `--labels FILE` (one
//! name per line) names the classes of a fine-tuned checkpoint.

use crate::error::{Error, Result};
use std::path::Path;

/// The largest `--labels` file read: 64 MB (a million names of 64 bytes).
pub const MAX_LABELS_FILE_BYTES: u64 = 64 << 20;

const IMAGENET: &str = include_str!("../data/imagenet_classes.txt");

#[derive(Clone, Debug)]
pub struct Labels(Vec<String>);

impl Labels {
    pub fn imagenet() -> Self {
        Labels(IMAGENET.lines().map(str::to_string).collect())
    }

    /// One name per line, line N naming class N − 1. Blank lines at the end are ignored; a blank line before
    /// the last name is an error (dropping it would shift every later name to the wrong class).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let len = crate::util::regular_file(path, "a text file of class names")?;
        if len > MAX_LABELS_FILE_BYTES {
            return Err(Error::invalid(format!(
                "{}: {len} bytes is too large for a file of class names (the limit is {MAX_LABELS_FILE_BYTES} bytes)",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let s = String::from_utf8(bytes).map_err(|e| {
            Error::invalid(format!(
                "{}: not UTF-8 text (byte {} is not valid); expected one class name per line",
                path.display(),
                e.utf8_error().valid_up_to()
            ))
        })?;
        let s = s.strip_prefix('\u{feff}').unwrap_or(&s);
        let mut v: Vec<String> = s.lines().map(|l| l.trim().to_string()).collect();
        while v.last().is_some_and(|l| l.is_empty()) {
            v.pop();
        }
        if v.is_empty() {
            return Err(Error::invalid(format!(
                "{}: no labels in the file (expected one name per line)",
                path.display()
            )));
        }
        if let Some(i) = v.iter().position(String::is_empty) {
            return Err(Error::invalid(format!(
                "{}: line {} is blank; expected one class name per line (line N names class N-1), a blank line \
                 would leave class {} without a name",
                path.display(),
                i + 1,
                i
            )));
        }
        Ok(Labels(v))
    }

    /// ImageNet names for 1,000 classes, else `class N` unless a file gives names.
    pub fn for_classes(n: usize, file: Option<&Path>) -> Result<Self> {
        let l = match file {
            Some(f) => Labels::from_file(f)?,
            None if n == 1000 => Labels::imagenet(),
            None => Labels((0..n).map(|i| format!("class {i}")).collect()),
        };
        if l.0.len() != n {
            let from = file.map(|f| format!("{}: ", f.display())).unwrap_or_default();
            return Err(Error::invalid(format!(
                "{from}{} labels for a model with {n} classes; expected one name per class, one per line",
                l.0.len()
            )));
        }
        Ok(l)
    }

    pub fn get(&self, i: usize) -> &str {
        self.0.get(i).map_or("?", String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A class by index (`285`), exact name, or unambiguous part of a name (case-insensitive).
    pub fn resolve(&self, q: &str) -> Result<usize> {
        let q = q.trim();
        if q.is_empty() {
            return Err(Error::invalid("--class: an empty class name; give an index, a label or part of one, or topN"));
        }
        if let Ok(i) = q.parse::<usize>() {
            if i < self.0.len() {
                return Ok(i);
            }
            return Err(Error::invalid(format!(
                "class {i} is out of range: the model has {} classes (0..{})",
                self.0.len(),
                self.0.len() - 1
            )));
        }
        let ql = q.to_lowercase();
        let exact: Vec<usize> = (0..self.0.len()).filter(|&i| self.0[i].to_lowercase() == ql).collect();
        match exact.len() {
            0 => {}
            1 => return Ok(exact[0]),
            _ => {
                let c: Vec<String> = exact.iter().take(12).map(|i| i.to_string()).collect();
                return Err(Error::invalid(format!(
                    "`{q}` names {} classes ({}): the labels repeat it; give the class index",
                    exact.len(),
                    c.join(", ")
                )));
            }
        }
        let hits: Vec<usize> = (0..self.0.len()).filter(|&i| self.0[i].to_lowercase().contains(&ql)).collect();
        match hits.len() {
            1 => Ok(hits[0]),
            0 => Err(Error::invalid(format!("no class matches `{q}` (give an index or part of a label)"))),
            _ => {
                let c: Vec<String> = hits.iter().take(12).map(|&i| format!("{i} ({})", self.0[i])).collect();
                Err(Error::invalid(format!(
                    "`{q}` is ambiguous: {} classes match: {}{}",
                    hits.len(),
                    c.join(", "),
                    if hits.len() > 12 { ", …" } else { "" }
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_names_and_lookup() {
        let l = Labels::imagenet();
        assert_eq!(l.len(), 1000);
        assert_eq!(l.get(285), "Egyptian cat");
        assert_eq!(l.get(967), "espresso");
        assert_eq!(l.resolve("285").unwrap(), 285);
        assert_eq!(l.resolve("tabby").unwrap(), 281);
        assert_eq!(l.resolve("Egyptian Cat").unwrap(), 285);
        let e = l.resolve("cat").unwrap_err().to_string();
        assert!(e.contains("ambiguous") && e.contains("285 (Egyptian cat)"), "{e}");
        assert!(l.resolve("1000").is_err());
        let e = l.resolve("").unwrap_err().to_string();
        assert!(e.contains("empty class name"), "{e}");
        let e = l.resolve("  ").unwrap_err().to_string();
        assert!(e.contains("empty class name"), "{e}");
    }

    fn file(tag: &str, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("gradcam-labels-{tag}-{}.txt", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_blank_line_never_shifts_the_names() {
        let e = Labels::from_file(file("blank", "cat\n\ndog\n")).unwrap_err().to_string();
        assert!(e.contains("line 2 is blank") && e.contains("class 1"), "{e}");
        // blank lines at the end, CRLF and a byte-order mark are fine
        let l = Labels::from_file(file("tail", "\u{feff}cat\r\ndog\r\n\n\n")).unwrap();
        assert_eq!((l.len(), l.get(0), l.get(1)), (2, "cat", "dog"));
        let e = Labels::from_file(file("bin", "\u{0}ok\n")).map(|l| l.len());
        assert_eq!(e.unwrap(), 1);
    }

    #[test]
    fn repeated_labels_are_ambiguous_not_the_first() {
        let l = Labels::from_file(file("dup", "cat\ndog\ncat\n")).unwrap();
        let e = l.resolve("cat").unwrap_err().to_string();
        assert!(e.contains("names 2 classes (0, 2)"), "{e}");
        assert_eq!(l.resolve("2").unwrap(), 2);
        assert_eq!(l.resolve("dog").unwrap(), 1);
    }
}
