//! The stages' own backward pass (used for Guided Backprop on the CPU) against candle's autograd over the same
//! forward ops: the same input gradient, plain and guided, for both scores, on every architecture.

mod common;
use common::{max_abs, max_abs_diff, synthetic};
use gradcam::cam::guided::{input_gradient, input_gradient_autograd};
use gradcam::cam::Score;
use gradcam::ops::act::Backprop;

fn check(model: &str) {
    let net = synthetic(model);
    let x = gradcam::bench::input(&net, 2).unwrap();
    let classes = [3, 917];
    for bp in [Backprop::Plain, Backprop::Guided] {
        for score in [Score::Logit, Score::Softmax] {
            let own = input_gradient(&net, &x, &classes, score, bp).unwrap();
            let auto = input_gradient_autograd(&net, &x, &classes, score, bp).unwrap();
            assert_eq!(own.dims(), auto.dims());
            let (a, b) =
                (own.flatten_all().unwrap().to_vec1::<f32>().unwrap(), auto.flatten_all().unwrap().to_vec1().unwrap());
            let (d, m) = (max_abs_diff(&a, &b), max_abs(&b));
            assert!(m > 0.0, "{model} {bp:?} {score:?}: the gradient is zero, nothing is checked");
            // the two passes differ only in the order of the classifier's and the residual sums
            assert!(d <= 1e-5 * m, "{model} {bp:?} {score:?}: own backward differs by {d} (max {m})");
        }
    }
}

#[test]
fn resnet18_own_backward_matches_autograd() {
    check("resnet18");
}

#[test]
fn resnet50_own_backward_matches_autograd() {
    check("resnet50");
}

#[test]
fn efficientnet_lite0_own_backward_matches_autograd() {
    check("efficientnet_lite0");
}
