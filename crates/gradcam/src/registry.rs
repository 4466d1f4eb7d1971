//! Every method gradcam knows, in one table: the CAM methods (one file each in `cam/methods/`) and the two
//! input-gradient methods (Guided Backprop, Guided Grad-CAM). The CLI's help, its `--method all` and its
//! checks, the server's, and the library's own dispatch all read [`ALL`]; a new method is one row here.

use crate::cam::methods::{
    ablationcam, eigencam, eigengradcam, gradcam, gradcam_elementwise, gradcam_plusplus, hirescam, layercam, scorecam,
    xgradcam, Method,
};
use crate::error::{Error, Result};

pub const GUIDED_BACKPROP: &str = "guided-backprop";
pub const GUIDED_GRADCAM: &str = "guided-gradcam";

/// What a method draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A class activation map at the target layer(s): overlay, heatmap and mask pictures.
    Map,
    /// A gradient of the class score with respect to the input pixels: the gradient picture.
    InputGradient,
}

/// One method.
pub struct MethodInfo {
    /// Its name, as in the golden files, pytorch-grad-cam and the output files' names.
    pub name: &'static str,
    /// Other spellings accepted for it (none today).
    pub aliases: &'static [&'static str],
    /// One line for `--help`.
    pub description: &'static str,
    /// Whether it backpropagates the class score (EigenCAM, ScoreCAM and AblationCAM do not).
    pub gradients: bool,
    pub output: Output,
    /// A CAM method's maker; None for the input-gradient methods.
    make: Option<fn() -> Box<dyn Method>>,
}

impl MethodInfo {
    /// The CAM method itself; None for the input-gradient methods.
    pub fn cam(&self) -> Option<Box<dyn Method>> {
        self.make.map(|f| f())
    }

    pub fn is_cam(&self) -> bool {
        self.output == Output::Map
    }
}

/// The methods, in the order `all` runs them (and the golden files list them).
pub const ALL: &[MethodInfo] = &[
    MethodInfo {
        name: "gradcam",
        aliases: &[],
        description: "Grad-CAM: channels weighted by their mean gradient",
        gradients: true,
        output: Output::Map,
        make: Some(|| Box::new(gradcam::GradCam)),
    },
    MethodInfo {
        name: "hirescam",
        aliases: &[],
        description: "HiResCAM: activations times gradients, position by position (no averaging)",
        gradients: true,
        output: Output::Map,
        make: Some(|| Box::new(hirescam::HiResCam)),
    },
    MethodInfo {
        name: "gradcam-elementwise",
        aliases: &[],
        description: "Grad-CAM element-wise: ReLU of activations times gradients, summed over channels",
        gradients: true,
        output: Output::Map,
        make: Some(|| Box::new(gradcam_elementwise::GradCamElementWise)),
    },
    MethodInfo {
        name: "gradcam++",
        aliases: &[],
        description: "Grad-CAM++: channels weighted by second- and third-order gradient terms",
        gradients: true,
        output: Output::Map,
        make: Some(|| Box::new(gradcam_plusplus::GradCamPlusPlus)),
    },
    MethodInfo {
        name: "xgradcam",
        aliases: &[],
        description: "XGrad-CAM: channels weighted by gradients times activations over the activations' sum",
        gradients: true,
        output: Output::Map,
        make: Some(|| Box::new(xgradcam::XGradCam)),
    },
    MethodInfo {
        name: "layercam",
        aliases: &[],
        description: "LayerCAM: activations times positive gradients",
        gradients: true,
        output: Output::Map,
        make: Some(|| Box::new(layercam::LayerCam)),
    },
    MethodInfo {
        name: "eigencam",
        aliases: &[],
        description: "EigenCAM: first principal component of the activations (no gradients, class-agnostic)",
        gradients: false,
        output: Output::Map,
        make: Some(|| Box::new(eigencam::EigenCam)),
    },
    MethodInfo {
        name: "eigengradcam",
        aliases: &[],
        description: "EigenGrad-CAM: first principal component of activations times gradients",
        gradients: true,
        output: Output::Map,
        make: Some(|| Box::new(eigengradcam::EigenGradCam)),
    },
    MethodInfo {
        name: "scorecam",
        aliases: &[],
        description: "Score-CAM: channels weighted by the score of the input masked by them (slow)",
        gradients: false,
        output: Output::Map,
        make: Some(|| Box::new(scorecam::ScoreCam)),
    },
    MethodInfo {
        name: "ablationcam",
        aliases: &[],
        description: "Ablation-CAM: channels weighted by the score lost when each is zeroed (slow)",
        gradients: false,
        output: Output::Map,
        make: Some(|| Box::new(ablationcam::AblationCam)),
    },
    MethodInfo {
        name: GUIDED_BACKPROP,
        aliases: &[],
        description: "Guided Backprop: the input gradient through ReLUs that pass only positive gradients",
        gradients: true,
        output: Output::InputGradient,
        make: None,
    },
    MethodInfo {
        name: GUIDED_GRADCAM,
        aliases: &[],
        description: "Guided Grad-CAM: Guided Backprop weighted by the Grad-CAM map",
        gradients: true,
        output: Output::InputGradient,
        make: None,
    },
];

/// The word that asks for every method.
pub const EVERY: &str = "all";

const fn count_cams() -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < ALL.len() {
        if matches!(ALL[i].output, Output::Map) {
            n += 1;
        }
        i += 1;
    }
    n
}

const fn cam_names<const N: usize>() -> [&'static str; N] {
    let mut out = [""; N];
    let (mut i, mut j) = (0, 0);
    while i < ALL.len() {
        if matches!(ALL[i].output, Output::Map) {
            out[j] = ALL[i].name;
            j += 1;
        }
        i += 1;
    }
    out
}

const CAM_NAMES: [&str; count_cams()] = cam_names();

/// The CAM methods' names, in [`ALL`]'s order.
pub const CAM_METHODS: &[&str] = &CAM_NAMES;

/// The method called `name` or one of its aliases.
pub fn find(name: &str) -> Option<&'static MethodInfo> {
    ALL.iter().find(|m| m.name == name || m.aliases.contains(&name))
}

/// [`find`], or an error that lists the methods.
pub fn get(name: &str) -> Result<&'static MethodInfo> {
    find(name).ok_or_else(|| unknown(name))
}

/// The error for a method gradcam does not know: it lists the ones it does.
pub fn unknown(name: &str) -> Error {
    Error::invalid(format!("unknown method `{name}`; methods: {}, {EVERY}", names().join(", ")))
}

/// Every method's name, in [`ALL`]'s order.
pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|m| m.name).collect()
}

/// Whether `name` is a CAM method (a map at the target layers), not an input-gradient one.
pub fn is_cam(name: &str) -> bool {
    find(name).is_some_and(MethodInfo::is_cam)
}

/// The methods asked, in order, each once: `all` stands for every method; an alias for its method's name. An
/// unknown name is an error that lists the methods.
pub fn expand<'a>(asked: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>> {
    let mut out: Vec<String> = vec![];
    for a in asked {
        let names: Vec<&str> = if a == EVERY { names() } else { vec![get(a)?.name] };
        for n in names {
            if !out.iter().any(|m| m == n) {
                out.push(n.to_string());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cam_row_makes_its_method_and_says_whether_it_needs_gradients() {
        for m in ALL {
            match m.cam() {
                Some(c) => {
                    assert!(m.is_cam(), "{}", m.name);
                    assert_eq!(c.uses_gradients(), m.gradients, "{}", m.name);
                }
                None => assert_eq!(m.output, Output::InputGradient, "{}", m.name),
            }
        }
        assert_eq!(CAM_METHODS.len(), ALL.iter().filter(|m| m.is_cam()).count());
        assert_eq!(CAM_METHODS[0], "gradcam");
        assert_eq!(CAM_METHODS.last(), Some(&"ablationcam"));
    }

    #[test]
    fn names_are_unique_and_all_expands_in_order() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            for n in std::iter::once(&m.name).chain(m.aliases) {
                assert!(seen.insert(*n), "{n} twice");
                assert_ne!(*n, EVERY);
            }
        }
        assert_eq!(expand(["layercam", "all", "gradcam"]).unwrap()[0], "layercam");
        assert_eq!(expand(["all"]).unwrap(), names());
        let e = expand(["gradcam", "nope"]).unwrap_err().to_string();
        assert!(e.contains("unknown method `nope`") && e.ends_with("guided-backprop, guided-gradcam, all"), "{e}");
    }
}
