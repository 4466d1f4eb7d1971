//! `gradcam explain`'s options as a typed configuration, checked once before anything runs; the method names,
//! the help's list and `--method all` come from the library's registry ([`gradcam::registry`]).

use crate::ExplainArgs;
use anyhow::{bail, Result};
use clap::ValueEnum;
use gradcam::cam::Score;
use gradcam::explain::Pictures;
use gradcam::output::PngCompression;
use gradcam::registry;
use gradcam::render::Colormap;

/// The score backpropagated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScoreArg {
    /// The raw logit of the class.
    Logit,
    /// The softmax probability of the class.
    Softmax,
}

impl ScoreArg {
    pub fn score(self) -> Score {
        match self {
            ScoreArg::Logit => Score::Logit,
            ScoreArg::Softmax => Score::Softmax,
        }
    }
}

/// The colour map of the heat maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColormapArg {
    Jet,
    Turbo,
    Viridis,
    Inferno,
}

impl ColormapArg {
    pub fn colormap(self) -> Colormap {
        match self {
            ColormapArg::Jet => Colormap::Jet,
            ColormapArg::Turbo => Colormap::Turbo,
            ColormapArg::Viridis => Colormap::Viridis,
            ColormapArg::Inferno => Colormap::Inferno,
        }
    }
}

/// The name a value enum's value is given on the command line.
pub fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
}

/// `--method`'s help: the registry's names.
pub fn method_help() -> String {
    format!("Method(s): {}, or {}", registry::names().join(", "), registry::EVERY)
}

/// `--method`'s long help (`--help`): a line per method of the registry.
pub fn method_long_help() -> String {
    let width = registry::ALL.iter().map(|m| m.name.len()).max().unwrap_or(0);
    let mut s = String::from("Method(s), repeated or separated by commas:\n");
    for m in registry::ALL {
        let aliases = if m.aliases.is_empty() { String::new() } else { format!(" (also {})", m.aliases.join(", ")) };
        s.push_str(&format!("  {:<width$}  {}{aliases}\n", m.name, m.description));
    }
    s.push_str(&format!("  {:<width$}  every method above", registry::EVERY));
    s
}

/// What `gradcam explain` was asked, checked; the parts that need the model (layers, classes) are checked
/// once it is loaded ([`gradcam::explain::Options::validate`]).
#[derive(Debug)]
pub struct ExplainConfig {
    /// The registry's names, `all` expanded, each once, in the order asked.
    pub methods: Vec<String>,
    pub score: Score,
    pub colormap: Colormap,
    pub pictures: Pictures,
    pub png: PngCompression,
    pub batch_size: usize,
    pub method_batch: usize,
    pub writers: usize,
}

impl ExplainConfig {
    pub fn new(a: &ExplainArgs) -> Result<Self> {
        if a.batch_size == 0 {
            bail!("--batch-size 0: expected at least 1");
        }
        if a.method_batch == 0 {
            bail!("--method-batch 0: expected at least 1");
        }
        let pictures = Pictures::parse(&a.pictures)?;
        let png = PngCompression::parse(&a.png_compression)?;
        if a.writers == 0 {
            bail!("--writers 0: expected at least 1");
        }
        let methods = registry::expand(a.method.iter().map(|m| m.trim()))?;
        Ok(ExplainConfig {
            methods,
            score: a.score.score(),
            colormap: a.colormap.colormap(),
            pictures,
            png,
            batch_size: a.batch_size,
            method_batch: a.method_batch,
            writers: a.writers,
        })
    }

    /// Whether a method runs the network on a batch of masked inputs or ablated activations.
    pub fn runs_method_batches(&self) -> bool {
        self.methods.iter().any(|m| m == "scorecam" || m == "ablationcam")
    }
}
