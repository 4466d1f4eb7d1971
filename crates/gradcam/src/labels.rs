//! Class names: the 1,000 ImageNet classes (torchvision's names) ship with the library; `--labels FILE` (one
//! name per line) names the classes of a fine-tuned checkpoint.

use crate::error::{Error, Result};
use std::path::Path;

const IMAGENET: &str = include_str!("../data/imagenet_classes.txt");

#[derive(Clone, Debug)]
pub struct Labels(Vec<String>);

impl Labels {
    pub fn imagenet() -> Self {
        Labels(IMAGENET.lines().map(str::to_string).collect())
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Vec<String> = s.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
        if v.is_empty() {
            return Err(Error::invalid(format!(
                "{}: no labels in the file (expected one name per line)",
                path.display()
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
            return Err(Error::invalid(format!("{} labels for a model with {n} classes", l.0.len())));
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
        if let Some(i) = self.0.iter().position(|l| l.to_lowercase() == ql) {
            return Ok(i);
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
    }
}
