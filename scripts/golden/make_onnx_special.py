"""Bad and special ONNX files for the importer's tests: tests/golden/onnx/special/ (see ../../tests/golden/onnx/README.md).
Called by make_onnx_goldens.py (make_all); alone:

    /work/venv-ref/bin/python scripts/golden/make_onnx_special.py [--out tests/golden/onnx]
"""
import argparse, io, json, os, shutil, sys
import numpy as np, torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refmodels as R  # noqa: E402
import onnxcases as OC  # noqa: E402
from make_onnx_goldens import TinyCNN, save_input  # noqa: E402

SIZE = 64
TINY_LAYERS = [("features.3", None), ("features.1", None)]  # last conv-BN-ReLU; the max-pool (16x16)


def tiny(**kw):
    return OC.synthesize(TinyCNN(**kw))


def init(name, shape):
    import onnx.numpy_helper as nh
    return nh.from_array(R.synth_tensor(name, shape).numpy(), name)


def helper_model(nodes, inputs, inits, opset=13):
    import onnx
    from onnx import helper, TensorProto
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, SIZE, SIZE])
                                       for n in inputs],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="make_onnx_special.py")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def unsupported_op():
    """Conv -> Celu (an op a Grad-CAM importer need not support) -> GlobalAveragePool -> Flatten -> Gemm."""
    from onnx import helper
    nodes = [helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["conv_out"], name="conv",
                              kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Celu", ["conv_out"], ["celu_out"], name="celu", alpha=1.0),
             helper.make_node("GlobalAveragePool", ["celu_out"], ["gap_out"], name="gap"),
             helper.make_node("Flatten", ["gap_out"], ["flat"], name="flatten", axis=1),
             helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1)]
    inits = [init("conv.weight", (8, 3, 3, 3)), init("conv.bias", (8,)), init("fc.weight", (10, 8)),
             init("fc.bias", (10,))]
    return helper_model(nodes, ["input"], inits)


def two_inputs():
    """Two image inputs (image_a, image_b), a conv on each, Add, Relu, GlobalAveragePool, Flatten, Gemm."""
    from onnx import helper
    nodes = [helper.make_node("Conv", ["image_a", "conv_a.weight"], ["a"], name="conv_a", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Conv", ["image_b", "conv_b.weight"], ["b"], name="conv_b", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Add", ["a", "b"], ["ab"], name="add"),
             helper.make_node("Relu", ["ab"], ["relu_out"], name="relu"),
             helper.make_node("GlobalAveragePool", ["relu_out"], ["gap_out"], name="gap"),
             helper.make_node("Flatten", ["gap_out"], ["flat"], name="flatten", axis=1),
             helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1)]
    inits = [init("conv_a.weight", (8, 3, 3, 3)), init("conv_b.weight", (8, 3, 3, 3)),
             init("fc.weight", (10, 8)), init("fc.bias", (10,))]
    return helper_model(nodes, ["image_a", "image_b"], inits)


def ort_run(path_or_bytes, feed):
    import onnxruntime as ort
    s = ort.InferenceSession(path_or_bytes, providers=["CPUExecutionProvider"])
    return s.run(None, feed)[0]


def make_all(out, image, written):
    sp = os.path.join(out, "special")
    OC.fresh_dir(sp)
    x, input_rel = save_input(out, image, SIZE, written)
    # the same input also next to the special cases, so that "input" resolves from either folder
    shutil.copyfile(os.path.join(out, input_rel), os.path.join(sp, input_rel))
    xn = x.numpy()
    report = []

    open(os.path.join(sp, "empty.onnx"), "wb").close()

    # dynamic_input.onnx: TinyCNN with symbolic height and width (TorchScript exporter, opset 13)
    m = tiny()
    p = os.path.join(sp, "dynamic_input.onnx")
    OC.export_ts(m, x, p, 13, dynamic_axes={"input": {2: "height", 3: "width"}, "logits": {0: "batch"}})
    with torch.no_grad():
        lg = m(x)[0].numpy()
    np.save(os.path.join(sp, "dynamic_input.logits.npy"), lg)  # logits for input_64x64.npy
    for s in (64, 80):  # runs at other sizes too
        o = ort_run(p, {"input": R.load_input(image, OC.MEAN, OC.STD, size=s).numpy()})
        with torch.no_grad():
            ref = m(R.load_input(image, OC.MEAN, OC.STD, size=s))[0].numpy()
        assert np.abs(o[0] - ref).max() <= OC.REL_TOL * np.abs(ref).max(), s

    # truncated.onnx: the first half of dynamic_input.onnx
    b = open(p, "rb").read()
    open(os.path.join(sp, "truncated.onnx"), "wb").write(b[: len(b) // 2])

    # not_onnx.onnx: a PNG file (the photo at 16x16)
    from PIL import Image
    buf = io.BytesIO()
    Image.open(image).convert("RGB").resize((16, 16), Image.BILINEAR).save(buf, format="PNG")
    open(os.path.join(sp, "not_onnx.onnx"), "wb").write(buf.getvalue())

    import onnx
    for name, mk, feed in (("unsupported_op", unsupported_op, {"input": xn}),
                           ("two_inputs", two_inputs, {"image_a": xn, "image_b": xn[:, ::-1].copy()})):
        mm = mk()
        f = os.path.join(sp, f"{name}.onnx")
        onnx.save(mm, f)
        o = ort_run(f, feed)
        assert o.shape == (1, 10) and np.isfinite(o).all(), name

    for f in sorted(os.listdir(sp)):
        if f.endswith(".onnx"):
            fp = os.path.join(sp, f)
            try:
                ops = OC.onnx_summary(fp)["ops"]
            except Exception as e:  # the bad files
                ops = f"not loadable: {type(e).__name__}"
            report.append({"case": f"special/{f}", "bytes": os.path.getsize(fp), "ops": ops})
            print(json.dumps(report[-1]), flush=True)

    # softmax_out/: the forward ends in softmax; goldens on the logits before it (the same module, softmax off)
    d = os.path.join(sp, "softmax_out"); OC.fresh_dir(d)
    ms = tiny(softmax=True)
    OC.export_ts(ms, x, os.path.join(d, "model.onnx"), 13)
    plain = tiny()
    ref = OC.reference(plain, x, TINY_LAYERS)
    with torch.no_grad():
        probs = ms(x)[0].numpy()
    assert np.abs(probs - torch.softmax(torch.from_numpy(ref["logits"]), 0).numpy()).max() < 1e-6
    index, summ = OC.write_case(d, model_name="tinycnn", exporter="torchscript", onnx_path=os.path.join(d, "model.onnx"),
                                ref=ref, layers=TINY_LAYERS, input_rel=input_rel, x_feed=xn,
                                input_size=(SIZE, SIZE), onnx_target=probs, extra={"ends_in_softmax": True})
    report.append({"case": "special/softmax_out", "opset": index["opset"], "bytes": OC.dir_size(d), "ops": summ["ops"],
                   "diff": index["onnx_vs_torch_max_abs_logit_diff"]})
    print(json.dumps(report[-1]), flush=True)

    # channels_last/: the graph takes (1, H, W, 3) and transposes to NCHW first (as a Keras export would);
    # goldens from pytorch-grad-cam on the same weights with the NCHW input (identical computation)
    d = os.path.join(sp, "channels_last"); OC.fresh_dir(d)
    mc = tiny(channels_last=True)
    x_nhwc = x.permute(0, 2, 3, 1).contiguous()
    OC.export_ts(mc, x_nhwc, os.path.join(d, "model.onnx"), 13)
    plain = tiny()
    ref = OC.reference(plain, x, TINY_LAYERS)
    with torch.no_grad():
        assert torch.equal(mc(x_nhwc)[0], torch.from_numpy(ref["logits"]))
    # the module paths are the same in both; the hook values for the ONNX match are the NCHW model's
    index, summ = OC.write_case(d, model_name="tinycnn", exporter="torchscript", onnx_path=os.path.join(d, "model.onnx"),
                                ref=ref, layers=TINY_LAYERS, input_rel=input_rel, x_feed=x_nhwc.numpy(),
                                input_size=(SIZE, SIZE), extra={"channels_last": True})
    report.append({"case": "special/channels_last", "opset": index["opset"], "bytes": OC.dir_size(d),
                   "ops": summ["ops"], "diff": index["onnx_vs_torch_max_abs_logit_diff"]})
    print(json.dumps(report[-1]), flush=True)
    return report


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--out", default=os.path.join(root, "tests/golden/onnx"))
    ap.add_argument("--image", default=os.path.expanduser("~/.cache/gradcam/examples/chelsea.png"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    make_all(a.out, a.image, {})


if __name__ == "__main__":
    main()
