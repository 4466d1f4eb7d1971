//! The convolutions' operation counter behind `gradcam bench`'s GFLOP/s (alone in this test binary: the
//! counter is process-wide, and no other test runs a convolution here meanwhile).
use candle_core::{Device, Tensor};
use gradcam::ops::conv::{conv2d, ConvConfig, Pad};

#[test]
fn conv_flops_count_two_per_multiply_add() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    // dense 3x3, stride 1, pad 1: 2 images, 5 outputs of 11x9, 3 inputs x 9 taps each
    let x = Tensor::ones((2, 3, 11, 9), candle_core::DType::F32, &dev)?;
    let w = Tensor::ones((5, 3, 3, 3), candle_core::DType::F32, &dev)?;
    let b = Tensor::zeros(5, candle_core::DType::F32, &dev)?;
    let before = gradcam::ops::conv_flops();
    conv2d(&x, &w, &b, ConvConfig::new(1, Pad::same(1), 1))?;
    assert_eq!(gradcam::ops::conv_flops() - before, 2 * (2 * 5 * 11 * 9) * (3 * 9));
    // depthwise 5x5, stride 2, TF-same padding on 11x9: outputs 6x5, 25 taps of one channel each
    let x = Tensor::ones((1, 4, 11, 9), candle_core::DType::F32, &dev)?;
    let w = Tensor::ones((4, 1, 5, 5), candle_core::DType::F32, &dev)?;
    let b = Tensor::zeros(4, candle_core::DType::F32, &dev)?;
    let before = gradcam::ops::conv_flops();
    let y = conv2d(&x, &w, &b, ConvConfig::tf_same(11, 9, (5, 5), 2, 4))?;
    assert_eq!(y.dims(), &[1, 4, 6, 5]);
    assert_eq!(gradcam::ops::conv_flops() - before, 2 * (4 * 6 * 5) * 25);
    Ok(())
}
