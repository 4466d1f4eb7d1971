//! A batch of 8 images, each with its own class, gives the same maps as 8 single runs, for every method (the
//! reference's bug — one target for a batch explains only the first image — must not exist here). Also the
//! smoothing options against independent computations.
mod common;
use candle_core::{Device, Tensor};
use common::*;
use gradcam::cam::{self, Explainer, MapOptions, Method, Score};

const IMAGES: [&str; 8] = [
    "chelsea.png",
    "coffee.png",
    "astronaut.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "camera.png",
    "horse.png",
    "retina.jpg",
];

/// Small inputs (64×64) keep ScoreCAM's 320 masked forward passes per image cheap.
fn inputs(net: &gradcam::Network) -> Vec<Tensor> {
    IMAGES
        .iter()
        .map(|f| {
            let img = gradcam::image::load_rgb(asset(&format!("examples/{f}")), u64::MAX).unwrap();
            gradcam::image::preprocess(&img, (64, 64), &net.normalization, &Device::Cpu).unwrap()
        })
        .collect()
}

fn top1(net: &gradcam::Network, x: &Tensor) -> Vec<usize> {
    let l = net.forward(x).unwrap();
    (0..l.dims()[0]).map(|i| gradcam::classify::ranking(&l.get(i).unwrap().to_vec1::<f32>().unwrap())[0]).collect()
}

fn all_methods() -> Vec<Box<dyn Method>> {
    cam::METHODS.iter().map(|m| cam::method(m).unwrap()).collect()
}

#[test]
fn batch_of_8_equals_8_single_runs_for_every_method() {
    let net = lite0();
    let ex = Explainer::new(&net, &["blocks.15".to_string()]).unwrap();
    let xs = inputs(&net);
    let batch = Tensor::cat(&xs, 0).unwrap();
    let classes = top1(&net, &batch);
    assert!(classes.iter().any(|c| *c != classes[0]), "the images should not all share a class: {classes:?}");
    let methods = all_methods();
    let refs: Vec<&dyn Method> = methods.iter().map(|m| m.as_ref()).collect();
    for o in [MapOptions::default(), MapOptions { eigen_smooth: true, ..MapOptions::default() }] {
        let together = cam::maps_for(&ex, &batch, None, &classes, Score::Logit, &refs, o).unwrap();
        for (i, x) in xs.iter().enumerate() {
            let alone = cam::maps_for(&ex, x, None, &classes[i..i + 1], Score::Logit, &refs, o).unwrap();
            for (k, m) in cam::METHODS.iter().enumerate() {
                let d = max_abs_diff(&together[k][i].data, &alone[k][0].data);
                // same kernels image by image; only the classifier's matmul sees other batch shapes
                assert!(d <= 1e-5, "{m} (eigen_smooth {}) image {i}: batch and single differ by {d}", o.eigen_smooth);
                assert!(together[k][i].data.iter().all(|v| v.is_finite()), "{m} image {i}: not finite");
            }
        }
        // (at 2×2 a map can be all negative, hence empty after ReLU, for some image; not for all)
        for (k, m) in cam::METHODS.iter().enumerate() {
            assert!(together[k].iter().any(|map| map.max() > 0.5), "{m}: every map is empty");
        }
    }
}

#[test]
fn aug_smooth_is_the_mean_of_the_six_mapped_back_augmentations() {
    let net = lite0();
    let ex = Explainer::new(&net, &["head".to_string()]).unwrap();
    let x = Tensor::cat(&inputs(&net)[..2], 0).unwrap();
    let classes = top1(&net, &x);
    let gc = cam::method("gradcam").unwrap();
    let got = cam::maps_aug_smooth(&ex, &x, &classes, Score::Logit, &[gc.as_ref()], MapOptions::default()).unwrap();
    // by hand: flip the input's columns, multiply, explain, flip the map back, average
    let w = 64;
    let mut want = vec![vec![0f32; 64 * 64]; 2];
    for flip in [false, true] {
        for f in [0.9, 1.0, 1.1] {
            let mut v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            if flip {
                for row in v.chunks_mut(w) {
                    row.reverse();
                }
            }
            let xa = (Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap() * f).unwrap();
            let m =
                cam::maps_for(&ex, &xa, None, &classes, Score::Logit, &[gc.as_ref()], MapOptions::default()).unwrap();
            for (i, map) in m[0].iter().enumerate() {
                for (p, row) in map.data.chunks(w).enumerate() {
                    for (q, val) in row.iter().enumerate() {
                        want[i][p * w + if flip { w - 1 - q } else { q }] += val / 6.0;
                    }
                }
            }
        }
    }
    for i in 0..2 {
        let d = max_abs_diff(&got[0][i].data, &want[i]);
        assert!(d <= 1e-5, "image {i}: aug-smooth differs from the hand computation by {d}");
    }
}

#[test]
fn eigen_smooth_of_gradcam_projects_the_weighted_activations() {
    // the reference: cam = first principal component of (w_k·A_k) instead of Σ_k w_k·A_k
    let net = lite0();
    let ex = Explainer::new(&net, &["head".to_string()]).unwrap();
    let x = inputs(&net).remove(0);
    let c = top1(&net, &x);
    let cap = ex.capture(&x, &c, Score::Logit).unwrap();
    let o = MapOptions { eigen_smooth: true, ..MapOptions::default() };
    let smooth = cam::raw_maps(&net, &cap, cam::method("gradcam").unwrap().as_ref(), o).unwrap();
    let plain = cam::raw_maps(&net, &cap, cam::method("gradcam").unwrap().as_ref(), MapOptions::default()).unwrap();
    let eig = cam::raw_maps(&net, &cap, cam::method("eigencam").unwrap().as_ref(), MapOptions::default()).unwrap();
    // a projection is centred over the positions: its mean is 0, unlike the plain weighted sum
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let s = &smooth[0][0].data;
    assert!(mean(s).abs() <= 1e-4 * s.iter().fold(0f32, |m, v| m.max(v.abs())), "not centred");
    assert_ne!(s, &plain[0][0].data);
    assert_ne!(s, &eig[0][0].data);
}
