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

/// What is known of a (N, a, b, c) value's layout, followed from the input through the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// (N, C, H, W): the input, what convolutions and pools make.
    ChannelsFirst,
    /// (N, H, W, C): a channels-first value permuted by (0, 2, 3, 1), and what keeps the last dimension.
    ChannelsLast,
    Unknown,
}

/// Each node's [`Order`]: convolutions, batch-norms, pools and channel concatenations make channels-first
/// values; a (0, 2, 3, 1) permutation turns channels-first into channels-last and (0, 3, 1, 2) back; ops that
/// act element by element or along the last dimension (activations, sums, products, layer norms, linear layers,
/// softmax) keep their first known input's order; anything else (reshapes, products of two values) is unknown.
pub fn orders(g: &crate::graph::Graph, shapes: &[Vec<usize>]) -> Vec<Order> {
    use crate::graph::nodes::permute::Permute;
    let mut out = vec![Order::Unknown; g.nodes().len()];
    out[0] = Order::ChannelsFirst;
    for (i, n) in g.nodes().iter().enumerate().skip(1) {
        let first = n.inputs.iter().map(|x| out[x.0]).find(|o| *o != Order::Unknown).unwrap_or(Order::Unknown);
        let same_shape = n.inputs.first().is_some_and(|x| shapes[x.0] == shapes[i]);
        out[i] = match n.op.kind() {
            "Conv2d" | "BatchNorm2d" | "MaxPool" | "AvgPool" | "MaxPool2d" | "AdaptiveAvgPool2d" => {
                Order::ChannelsFirst
            }
            "Concat" => first,
            "Permute" => {
                let p = n.op.as_any().downcast_ref::<Permute>().map(|p| p.dims.clone()).unwrap_or_default();
                match (first, &p[..]) {
                    (Order::ChannelsFirst, [0, 2, 3, 1]) => Order::ChannelsLast,
                    (Order::ChannelsLast, [0, 3, 1, 2]) => Order::ChannelsFirst,
                    _ => Order::Unknown,
                }
            }
            "Reshape" | "Flatten" | "Slice" | "Gather" | "Expand" | "MatMul" | "Pad" | "Constant" | "ReduceMean" => {
                if same_shape && n.op.kind() != "MatMul" {
                    first
                } else {
                    Order::Unknown
                }
            }
            _ => first,
        };
    }
    out
}

/// The layout of a layer whose values (one image, no batch dimension) have shape `shape` and whose order is
/// `order` (see [`orders`]). A (a, b, c) value of unknown order in a transformer (`token_model`) is read as
/// channels-last when its last dimension is the largest (Swin's (H, W, C)), else as channels-first.
pub fn resolve(
    layer: &str,
    shape: &[usize],
    mode: Reshape,
    token_model: bool,
    order: Order,
    input: (usize, usize),
) -> Result<Layout> {
    let channels_last = match order {
        Order::ChannelsLast => true,
        Order::ChannelsFirst => false,
        Order::Unknown => token_model && shape.len() == 3 && shape[2] > shape[0] && shape[2] > shape[1],
    };
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
        (Reshape::Auto, 3) if channels_last => Ok(Layout::ChannelsLast),
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
        let l = resolve("x", &[7, 4], Reshape::Auto, true, Order::Unknown, (20, 30))?;
        assert_eq!(l, Layout::Tokens { skip: 1, h: 2, w: 3 });
        let m = l.to_maps(&t)?;
        assert_eq!(m.dims(), &[1, 4, 2, 3]);
        // the reference: tensor[:, 1:, :].reshape(B, h, w, C).transpose(2, 3).transpose(1, 2)
        let r = t.narrow(1, 1, 6)?.reshape((1, 2, 3, 4))?.transpose(2, 3)?.transpose(1, 2)?;
        assert_eq!(m.flatten_all()?.to_vec1::<f32>()?, r.contiguous()?.flatten_all()?.to_vec1::<f32>()?);
        let back = l.from_maps(&m, &t)?;
        assert_eq!(back.flatten_all()?.to_vec1::<f32>()?, t.flatten_all()?.to_vec1::<f32>()?);
        let s = Tensor::arange(0f32, 2.0 * 2.0 * 8.0, &dev)?.reshape((1, 2, 2, 8))?;
        let l = resolve("y", &[2, 2, 8], Reshape::Auto, true, Order::Unknown, (64, 64))?;
        assert_eq!(l, Layout::ChannelsLast);
        assert_eq!(
            l.from_maps(&l.to_maps(&s)?, &s)?.flatten_all()?.to_vec1::<f32>()?,
            s.flatten_all()?.to_vec1::<f32>()?
        );
        assert_eq!(resolve("z", &[8, 2, 2], Reshape::Auto, false, Order::Unknown, (64, 64))?, Layout::Channels);
        assert_eq!(resolve("z", &[2, 2, 8], Reshape::Auto, true, Order::ChannelsFirst, (64, 64))?, Layout::Channels);
        assert_eq!(
            resolve("z", &[8, 8, 8], Reshape::Auto, false, Order::ChannelsLast, (64, 64))?,
            Layout::ChannelsLast
        );
        assert_eq!(
            resolve("z", &[8, 2, 2], Reshape::ChannelsLast, false, Order::ChannelsFirst, (64, 64))?,
            Layout::ChannelsLast
        );
        assert!(resolve("z", &[8], Reshape::Auto, false, Order::Unknown, (64, 64)).is_err());
        assert!(resolve("z", &[7, 4], Reshape::None, true, Order::Unknown, (20, 30)).is_err());
        Ok(())
    }
}
