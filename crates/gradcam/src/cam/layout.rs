//! How a layer's values become channel maps (pytorch-grad-cam's `reshape_transform`): a feature map
//! (N, C, h, w) as it is; transformer tokens (N, T, C) with the class token(s) dropped and the rest laid onto
//! their grid, as the reference's ViT example does; channels-last values (N, h, w, C), Swin's, permuted. The
//! same transform is applied to the activations and to the gradients, as the reference does.

use crate::error::{Error, Result};
use candle_core::Tensor;

/// How to read a layer's values (`--reshape`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reshape {
    /// From the value's shape and the model (the default).
    #[default]
    Auto,
    /// (N, C, h, w) feature maps only.
    None,
    /// (N, T, C) tokens: ViT's.
    Tokens,
    /// (N, h, w, C): Swin's.
    ChannelsLast,
}

impl std::str::FromStr for Reshape {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "auto" => Reshape::Auto,
            "none" => Reshape::None,
            "tokens" | "vit" => Reshape::Tokens,
            "channels-last" | "swin" => Reshape::ChannelsLast,
            _ => return Err(format!("`{s}`: expected auto, none, tokens (vit) or channels-last (swin)")),
        })
    }
}

/// A layer's layout, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// (N, C, h, w).
    Channels,
    /// (N, skip + h·w, C): the first `skip` tokens (class, distillation) dropped.
    Tokens { skip: usize, h: usize, w: usize },
    /// (N, h, w, C).
    ChannelsLast,
}

/// The grid of `t` tokens for an input of `size` pixels: the fewest leading tokens to skip such that the rest
/// tile the image in square patches.
fn token_grid(t: usize, size: (usize, usize)) -> Option<(usize, usize, usize)> {
    let (ih, iw) = size;
    for skip in 0..t.min(9) {
        let n = t - skip;
        // h·w = n with h/w = ih/iw
        let h = ((n as f64) * ih as f64 / iw as f64).sqrt().round() as usize;
        if h == 0 || !n.is_multiple_of(h) {
            continue;
        }
        let w = n / h;
        if ih % h == 0 && iw % w == 0 && ih / h == iw / w {
            return Some((skip, h, w));
        }
    }
    None
}

/// The layout of a layer whose values (one image, no batch dimension) have shape `shape`. In a transformer
/// (`token_model`) three-dimensional values are channels-last (Swin's), unless an op that works on
/// channels-first maps made them (`channels_first_op`: the patch embedding's convolution).
pub fn resolve(
    layer: &str,
    shape: &[usize],
    mode: Reshape,
    token_model: bool,
    channels_first_op: bool,
    input: (usize, usize),
) -> Result<Layout> {
    let tokens = |t: usize| {
        token_grid(t, input).map(|(skip, h, w)| Layout::Tokens { skip, h, w }).ok_or_else(|| {
            Error::invalid(format!(
                "layer `{layer}` gives {t} tokens, which do not tile a {}x{} input in square patches (after up \
                 to 8 class tokens); not a layer a map can be made at",
                input.0, input.1
            ))
        })
    };
    let not_map = |what: &str| {
        Error::invalid(format!(
            "layer `{layer}` gives values of shape {shape:?} per image: {what}; not a layer a map can be made at \
             (--reshape tells how to read it: none, tokens, channels-last)"
        ))
    };
    match (mode, shape.len()) {
        (Reshape::None, 3) => Ok(Layout::Channels),
        (Reshape::ChannelsLast, 3) => Ok(Layout::ChannelsLast),
        (Reshape::Auto, 3) if token_model && !channels_first_op => Ok(Layout::ChannelsLast),
        (Reshape::Auto, 3) => Ok(Layout::Channels),
        (Reshape::Auto | Reshape::Tokens, 2) => tokens(shape[0]),
        (Reshape::Tokens, _) => Err(not_map("not tokens (tokens, channels)")),
        (Reshape::ChannelsLast, _) => Err(not_map("not (height, width, channels)")),
        _ => Err(not_map("not a feature map (channels, height, width)")),
    }
}

impl Layout {
    /// Values of the layer (N, …) as (N, C, h, w).
    pub fn to_maps(&self, t: &Tensor) -> Result<Tensor> {
        Ok(match *self {
            Layout::Channels => t.clone(),
            Layout::Tokens { skip, h, w } => {
                let (n, _, c) = t.dims3()?;
                t.narrow(1, skip, h * w)?.reshape((n, h, w, c))?.permute((0, 3, 1, 2))?.contiguous()?
            }
            Layout::ChannelsLast => t.permute((0, 3, 1, 2))?.contiguous()?,
        })
    }

    /// Maps (N, C, h, w) back to the layer's values; `original` (one image's values) gives the skipped tokens.
    pub fn from_maps(&self, m: &Tensor, original: &Tensor) -> Result<Tensor> {
        Ok(match *self {
            Layout::Channels => m.clone(),
            Layout::Tokens { skip, h, w } => {
                let (n, c, _, _) = m.dims4()?;
                let toks = m.permute((0, 2, 3, 1))?.reshape((n, h * w, c))?;
                if skip == 0 {
                    toks.contiguous()?
                } else {
                    let head = original.narrow(1, 0, skip)?.repeat((n, 1, 1))?;
                    Tensor::cat(&[&head, &toks], 1)?.contiguous()?
                }
            }
            Layout::ChannelsLast => m.permute((0, 2, 3, 1))?.contiguous()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_grids() {
        assert_eq!(token_grid(197, (224, 224)), Some((1, 14, 14)));
        assert_eq!(token_grid(196, (224, 224)), Some((0, 14, 14)));
        assert_eq!(token_grid(198, (224, 224)), Some((2, 14, 14)));
        assert_eq!(token_grid(17, (32, 32)), Some((1, 4, 4)));
        assert_eq!(token_grid(1 + 12 * 16, (192, 256)), Some((1, 12, 16)));
        assert_eq!(token_grid(3, (50, 70)), None);
    }

    #[test]
    fn layouts_round_trip_and_match_the_reference_transform() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        // (1, 1 + 2·3, 4) tokens
        let t = Tensor::arange(0f32, 28.0, &dev)?.reshape((1, 7, 4))?;
        let l = resolve("x", &[7, 4], Reshape::Auto, true, false, (20, 30))?;
        assert_eq!(l, Layout::Tokens { skip: 1, h: 2, w: 3 });
        let m = l.to_maps(&t)?;
        assert_eq!(m.dims(), &[1, 4, 2, 3]);
        // the reference: tensor[:, 1:, :].reshape(B, h, w, C).transpose(2, 3).transpose(1, 2)
        let r = t.narrow(1, 1, 6)?.reshape((1, 2, 3, 4))?.transpose(2, 3)?.transpose(1, 2)?;
        assert_eq!(m.flatten_all()?.to_vec1::<f32>()?, r.contiguous()?.flatten_all()?.to_vec1::<f32>()?);
        let back = l.from_maps(&m, &t)?;
        assert_eq!(back.flatten_all()?.to_vec1::<f32>()?, t.flatten_all()?.to_vec1::<f32>()?);
        let s = Tensor::arange(0f32, 2.0 * 2.0 * 8.0, &dev)?.reshape((1, 2, 2, 8))?;
        let l = resolve("y", &[2, 2, 8], Reshape::Auto, true, false, (64, 64))?;
        assert_eq!(l, Layout::ChannelsLast);
        assert_eq!(
            l.from_maps(&l.to_maps(&s)?, &s)?.flatten_all()?.to_vec1::<f32>()?,
            s.flatten_all()?.to_vec1::<f32>()?
        );
        assert_eq!(resolve("z", &[8, 2, 2], Reshape::Auto, false, false, (64, 64))?, Layout::Channels);
        assert_eq!(resolve("z", &[8, 2, 2], Reshape::Auto, true, true, (64, 64))?, Layout::Channels);
        assert_eq!(resolve("z", &[8, 2, 2], Reshape::ChannelsLast, false, true, (64, 64))?, Layout::ChannelsLast);
        assert!(resolve("z", &[8], Reshape::Auto, false, false, (64, 64)).is_err());
        assert!(resolve("z", &[7, 4], Reshape::None, true, false, (20, 30)).is_err());
        Ok(())
    }
}
