//! Hostile ONNX files (tests/golden/onnx/hostile/, `scripts/golden/make_onnx_hostile.py`): each is a tiny valid
//! classifier with one thing made wrong. Every one is refused with an error that names the file and the problem,
//! within a time limit and a memory limit (no panic, no hang, no allocation the file's claims size); the few that
//! are valid by the spec despite their extreme values (Slice bounds at the int64 limits, a Tile of an empty
//! tensor) load.
mod common;
mod peak_alloc;

#[global_allocator]
static ALLOC: peak_alloc::PeakAlloc = peak_alloc::PeakAlloc;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// The most a hostile file may make the importer allocate at once (the models are 16x16 with 4 channels).
const PEAK_LIMIT: u64 = 64 << 20;
/// How long one load may take (each takes milliseconds).
const TIME_LIMIT: Duration = Duration::from_secs(60);

fn hostile(name: &str) -> PathBuf {
    golden_dir().join("onnx").join("hostile").join(name)
}

/// Load `file` on another thread: its result (Err's text, or "loaded") and peak allocation, or a failure after
/// [`TIME_LIMIT`] (a hang).
fn load(file: &Path) -> (Result<String, String>, u64) {
    let (tx, rx) = mpsc::channel();
    let f = file.to_path_buf();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(|| {
            peak_alloc::peak_during(|| match gradcam::onnx::load(&f, &Default::default()) {
                Ok(_) => Ok("loaded".to_string()),
                Err(e) => Err(e.to_string()),
            })
        });
        let _ = tx.send(r);
    });
    match rx.recv_timeout(TIME_LIMIT) {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => panic!("{}: the importer panicked", file.display()),
        Err(_) => panic!("{}: no answer in {TIME_LIMIT:?} (a hang)", file.display()),
    }
}

/// File (without `.onnx`) → what the error must say (besides the file's name).
const REFUSED: &[(&str, &[&str])] = &[
    // graph structure
    ("order_later", &["node `relu`", "input `c` is not produced by any earlier node"]),
    ("order_nothing", &["input `ghost` is not produced by any earlier node"]),
    ("cycle", &["node `relu_a`", "input `b` is not produced by any earlier node"]),
    ("duplicate_output", &["node `relu` writes `c`", "already the output of node `conv`", "one producer"]),
    ("duplicate_output_later", &["node `flatten` writes `f`", "already the output of node `relu_twice`"]),
    ("writes_the_input", &["node `relu` writes `x`", "already the graph input `x`"]),
    ("writes_an_initializer", &["node `relu` writes `W`", "already the initializer `W`"]),
    ("empty_graph", &["no graph nodes"]),
    ("output_is_input", &["output `x` has shape [1, 3, 16, 16]", "expected class scores (1, classes)"]),
    ("output_constant", &["output `k` does not depend on the input"]),
    ("output_rank3", &["output `logits` has shape [1, 2, 2]", "expected class scores"]),
    ("input_rank3", &["input `x` has shape [3, 16, 16]", "expected an image batch (N, 3, H, W)"]),
    ("input_one_channel", &["input `x` has shape [1, 1, 16, 16]", "expected 3 colour channels"]),
    ("input_int64", &["input `x` has element type 7 (INT64)", "expected a floating-point image"]),
    ("input_string", &["input `x` has element type 8 (STRING)", "expected a floating-point image"]),
    ("opset1", &["opset 1:", "gradcam reads opsets 7 to 23"]),
    ("opset99", &["opset 99:", "gradcam reads opsets 7 to 23"]),
    ("ir_version0", &["no IR version"]),
    // protobuf framing
    ("deep_nesting", &["not a readable ONNX model", "recursion"]),
    ("claims_2gb", &["imports no opset of the default ONNX domain"]),
    // tensors and external data
    ("init_negative_dim", &["tensor `W` has a negative dimension -3"]),
    ("init_1e12_elements", &["tensor `W` of shape [1000000, 1000000]", "should hold 1000000000000 values"]),
    ("init_overflowing_dims", &["tensor `W`", "more elements than memory can hold"]),
    ("init_wrapping_bytes", &["tensor `W`: shape [4611686018427387904]", "more elements than memory can hold"]),
    ("ext_absolute", &["tensor `W`", "location `/dev/zero` is not a file inside the model's folder"]),
    ("ext_dotdot", &["location `../hostile/w.bin` is not a file inside the model's folder"]),
    (
        "ext_offset_past_end",
        &["tensor `W`", "offset 4096 and length 432 reach past the end of", "w.bin", "(432 bytes)"],
    ),
    ("ext_length_u64_max", &["offset 8 and length 18446744073709551615 reach past the end of", "w.bin"]),
    ("ext_offset_u64_max", &["offset 18446744073709551615 and length 432 reach past the end"]),
    ("ext_offset_negative", &["tensor `W`: external data offset `-8` is not a number"]),
    ("ext_folder", &["tensor `W`", "location `.` names a folder, not a data file"]),
    ("ext_fifo", &["tensor `W` is stored in", "fifo", "cannot be opened"]),
    ("ext_short_data", &["tensor `W` of shape [5, 3, 3, 3] needs 540 bytes", "(`w.bin`) gives 432"]),
    ("constant_string", &["tensor `s` has data type 8", "STRING"]),
    // folded constants
    ("reshape_huge", &["node `hostile`", "[1, 4] (4 values) cannot be reshaped to [1, 1000000000000]"]),
    ("reshape_overflow", &["cannot be reshaped to [4294967296, 4294967296, -1]"]),
    ("reshape_lowered_overflow", &["cannot be reshaped to [4294967296, 4294967296, 4294967296, -1]"]),
    ("expand_huge", &["Expand: shape [1000000, 1000000] has more than 67108864 values"]),
    ("expand_lowered_huge", &["Expand: shape [1000000, 1000000, 4] has more than 67108864 values"]),
    ("expand_empty_huge", &["Expand: shape [0, 4611686018427387904] has more than 67108864 values"]),
    ("constantofshape_huge", &["ConstantOfShape: shape [1000000, 1000000] has more than"]),
    ("constantofshape_overflow", &["ConstantOfShape: shape [1099511627776, 1099511627776, 0] has more than"]),
    ("tile_huge", &["Tile: shape [2000000000000] has more than"]),
    ("tile_wrapping", &["Tile: [4] repeated [4611686018427387904] times is too large"]),
    ("tile_short_repeats", &["Tile: repeats [2, 2, 2] for a value of shape [2, 2]", "one non-negative count per axis"]),
    ("range_huge", &["Range: shape [1000000000000] has more than"]),
    ("range_empty_start", &["Range start of shape [0]: expected one value"]),
    ("pad_huge", &["Pad: shape [1, 4, 2000000016, 2000000016] has more than"]),
    ("slice_step0", &["node `hostile`", "Slice: step 0"]),
    ("slice_short_axes", &["Slice: starts [0, 0], ends [1, 1], axes [0]", "expected the same number of each"]),
    ("slice_short_ends", &["Slice: starts [0, 0], ends [1], axes [0, 1]", "expected the same number of each"]),
    ("slice_lowered_step0", &["Slice with step 0 (only positive steps are supported)"]),
    ("slice_lowered_negative_step", &["Slice with step -1 (only positive steps are supported)"]),
    ("slice_lowered_short_axes", &["Slice: starts [0, 0], ends [8, 8], axes [2]", "expected the same number"]),
    ("gather_out_of_range", &["Gather index 99 is out of range for a dimension of 4"]),
    ("gather_i64_min", &["Gather index", "is out of range for a dimension of 4"]),
    ("gather_scalar", &["Gather: axis 0 is out of range for rank 0"]),
    ("concat_mismatch", &["Concat: shapes [2, 3] and [3, 2] differ off axis 0"]),
    ("concat_scalars", &["Concat: axis 0 is out of range for rank 0"]),
    ("concat_lowered_mismatch", &["node `hostile`", "[1, 4]", "[2, 3]"]),
    ("concat_lowered_rank", &["node `hostile`", "rank"]),
    // convolution and pooling
    ("conv_channels", &["node `conv`", "Conv: input of 3 channels, weight [4, 2, 3, 3], 1 groups"]),
    ("conv_zero_kernel", &["Conv weight of shape [4, 3, 0, 0]: expected no empty dimension"]),
    ("conv_zero_kernel_dilated", &["Conv weight of shape [4, 3, 0, 0]: expected no empty dimension"]),
    ("conv_zero_out_channels", &["Conv weight of shape [0, 3, 3, 3]: expected no empty dimension"]),
    ("conv_group0", &["Conv with group 0: expected 1 or more"]),
    ("conv_group_negative", &["Conv with group -3: expected 1 or more"]),
    ("conv_stride0", &["strides [0, 0]: expected two positive values"]),
    ("conv_pads_huge", &["Conv with pads [1000000000, 1000000000, 1000000000, 1000000000]", "too large"]),
    ("conv_pads_i64_max", &["Conv with pads [9223372036854775807", "the padded input is too large"]),
    ("conv_kernel_larger", &["Conv: a kernel of 17x17", "larger than its padded input of 16x16"]),
    ("conv_dilation_huge", &["dilations (1099511627776, 1099511627776) is larger than its padded input"]),
    ("conv_bias_short", &["Conv bias of 3 values for 4 channels"]),
    ("maxpool_kernel_larger", &["MaxPool: a kernel of 32x32", "larger than its padded input of 16x16"]),
    ("maxpool_stride0", &["strides [0, 0]: expected two positive values"]),
    ("maxpool_pads_huge", &["MaxPool with pads [1000000000", "the padded input is too large"]),
    ("avgpool_kernel_huge", &["AveragePool: a kernel of 9223372036854775807x9223372036854775807"]),
    // axes, permutations, splits
    ("softmax_axis", &["Softmax: axis 5 is out of range for rank 2"]),
    ("softmax_axis_i64_min", &["Softmax: axis -9223372036854775808 is out of range for rank 2"]),
    ("transpose_axis", &["Transpose: axis 9 is out of range for rank 4"]),
    ("transpose_repeat", &["Transpose: perm [0, 1, 1, 3] repeats axis 1"]),
    ("transpose_short_perm", &["Transpose: perm [1, 0] has 2 axes for a value of rank 4"]),
    ("transpose_fold_repeat", &["Transpose: perm [0, 0] repeats axis 0"]),
    ("transpose_fold_short", &["Transpose: perm [1] has 1 axes for a value of rank 2"]),
    ("split_sum", &["node `split`", "Split: parts [1, 1]: expected non-negative sizes adding up to 4"]),
    ("split_fold_sum", &["Split: parts [3, 3]: expected non-negative sizes adding up to 4"]),
    ("split_negative", &["Split: parts [6, -2]: expected non-negative sizes"]),
    ("split_num_outputs_huge", &["Split: num_outputs 4611686018427387904 for a node of 2 outputs"]),
    ("unsqueeze_axis_huge", &["Unsqueeze: axis 9223372036854775807 is out of range for rank 3"]),
    ("reduce_dup_axes", &["ReduceSum: axes [0, 0] repeat an axis"]),
    ("reduce_lowered_dup_axes", &["ReduceMean: axes [1, 1] repeat an axis"]),
    // attributes, constants, casts
    ("attr_perm_as_int", &["attribute `perm` of a Transpose node has type INT", "gives it type INTS"]),
    ("attr_strides_as_floats", &["attribute `strides` of a Conv node has type FLOATS", "type INTS"]),
    ("attr_group_as_string", &["attribute `group` of a Conv node has type STRING", "type INT"]),
    ("attr_axis_as_tensor", &["attribute `axis` of a Softmax node has type TENSOR", "type INT"]),
    ("constant_no_value", &["Constant node `hostile` has no value"]),
    ("cast_to_string", &["Cast to data type 8"]),
    ("cast_to_unknown", &["Cast to data type 99"]),
    ("cast_image_to_string", &["a Cast of the image's values to a non-float type"]),
    // linear algebra, normalisation, scatter
    ("matmul_rank1", &["MatMul: shapes [1, 4] and [4]: both need rank 2 or more"]),
    ("matmul_rank1_left", &["MatMul: shapes [1] and [1, 4]: both need rank 2 or more"]),
    ("matmul_mismatch", &["node `hostile`", "[1, 4]", "[3, 4]"]),
    ("gemm_weight_mismatch", &["node `fc`", "[1, 4]", "[3, 5]"]),
    ("gemm_weight_rank1", &["node `fc`", "Gemm weight B of shape [4]: expected a matrix"]),
    ("layernorm_weight_length", &["LayerNormalization weights of 3 values for 4 channels"]),
    ("batchnorm_lengths", &["scale, bias, mean and var of 4, 3, 4 and 4 values; expected 4 each"]),
    ("batchnorm_channels", &["scale, bias, mean and var of 2, 2, 2 and 2 values; expected 4 each"]),
    ("batchnorm_2d_lengths", &["shape [1, 4]", "of 4, 1, 4 and 4 values; expected 4 each"]),
    ("scatternd_short_updates", &["ScatterND: updates of shape [1, 3] for 2 indices into data of shape [4, 3]"]),
    ("scatternd_deep_indices", &["ScatterND: indices of shape [1, 3] into data of shape [4]"]),
    ("trilu_empty_k", &["Trilu k of shape [0]: expected one value"]),
    ("where_empty_condition", &["shapes [0] and [2] do not broadcast"]),
];

/// Valid by the spec however extreme: Slice bounds and steps at the int64 limits are clamped, Shape's start and
/// end too, and a Tile of an empty tensor is empty however many times it is repeated.
const LOADED: &[&str] =
    // (a constant MatMul of two vectors is a dot product, as NumPy's matmul: valid)
    &[
        "slice_i64_extremes",
        "slice_i64_min_step",
        "slice_lowered_extremes",
        "shape_start_i64_min",
        "tile_empty_many",
        "matmul_fold_rank1",
    ];

#[test]
fn every_hostile_file_is_refused_with_the_file_and_the_problem() {
    let mut failures = vec![];
    for (name, want) in REFUSED {
        let file = hostile(&format!("{name}.onnx"));
        let (r, peak) = load(&file);
        match r {
            Ok(_) => failures.push(format!("{name}: loaded")),
            Err(e) => {
                if !e.contains(&format!("{name}.onnx")) {
                    failures.push(format!("{name}: the file is not named: {e}"));
                }
                for w in *want {
                    if !e.contains(w) {
                        failures.push(format!("{name}: `{w}` not in: {e}"));
                    }
                }
                if e.contains("internal") {
                    failures.push(format!("{name}: an internal error: {e}"));
                }
            }
        }
        if peak > PEAK_LIMIT {
            failures.push(format!("{name}: {peak} bytes allocated at the peak (limit {PEAK_LIMIT})"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn extreme_but_valid_values_load() {
    for name in LOADED {
        let (r, peak) = load(&hostile(&format!("{name}.onnx")));
        assert_eq!(r, Ok("loaded".to_string()), "{name}");
        assert!(peak <= PEAK_LIMIT, "{name}: {peak} bytes at the peak");
    }
}

#[test]
fn every_file_in_the_folder_is_checked() {
    let listed: std::collections::HashSet<&str> =
        REFUSED.iter().map(|(n, _)| *n).chain(LOADED.iter().copied()).collect();
    let mut unlisted = vec![];
    let mut n = 0;
    for e in std::fs::read_dir(hostile("")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "onnx") {
            n += 1;
            let stem = p.file_stem().unwrap().to_string_lossy().to_string();
            if !listed.contains(stem.as_str()) {
                unlisted.push(stem);
            }
        }
    }
    assert!(unlisted.is_empty(), "files with no expectation: {unlisted:?}");
    assert_eq!(n, listed.len(), "files listed here but not generated");
}

/// External data named by a special file beside the model: a named pipe (opening it for reading would wait for a
/// writer for ever) and a link to /dev/zero (endless zeros).
#[cfg(unix)]
#[test]
fn external_data_in_a_pipe_or_a_device_is_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("ext_fifo.onnx");
    std::fs::copy(hostile("ext_fifo.onnx"), &model).unwrap();
    let fifo = dir.path().join("fifo");
    let st = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success());
    let (r, _) = load(&model);
    let e = r.unwrap_err();
    assert!(e.contains("ext_fifo.onnx") && e.contains("`fifo` names a special file"), "{e}");
    std::fs::remove_file(&fifo).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &fifo).unwrap();
    let (r, peak) = load(&model);
    let e = r.unwrap_err();
    assert!(e.contains("ext_fifo.onnx") && e.contains("`fifo` names a special file"), "{e}");
    assert!(peak <= PEAK_LIMIT, "{peak}");
}
