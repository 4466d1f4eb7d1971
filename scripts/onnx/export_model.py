"""Export a full-size torchvision classifier to ONNX, and optionally write a golden case directory in the format of
tests/golden/onnx/ (README there) at full size, to point the ONNX importer's test harness at. Outside the test
suite (the files are tens of MB). Needs torch, torchvision, grad-cam==1.5.7, onnx, onnxruntime, onnxscript:

    /work/venv-ref/bin/python scripts/onnx/export_model.py --model resnet50 --exporter ts \
        [--weights synthetic|pretrained] [--opset 17] [--size 224] [--out model.onnx]
        [--golden DIR --image PHOTO [--layers layer4,layer3.5] [--classes 2] [--no-onnx-values]]

--weights synthetic: refmodels' synthetic weights (tests/golden/README.md) on every floating-point state_dict
entry; pretrained: torchvision's own weights (weights="DEFAULT", downloaded by torchvision).
--golden DIR: the case directory (DIR/model.onnx, index.json, logits.npy, <layer>.<class>.<method>.npy at full
resolution); the input tensor goes to DIR/../input_<S>x<S>.npy (index.json "input" is relative to DIR/..).
--layers: module paths; default: the layer pytorch-grad-cam's README uses for the family and one more.
A layer's reshape is "vit" for a ViT's token outputs (B, 1+N, C), "swin" for a Swin's (B, H, W, C) outputs.
"""
import argparse, json, os, sys, time
import numpy as np, torch, torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "golden"))
import refmodels as R  # noqa: E402
import onnxcases as OC  # noqa: E402


def build(arch, weights):
    import torchvision
    kw = {}
    if arch in ("googlenet", "inception_v3"):
        kw = {"aux_logits": False, "init_weights": False} if weights == "synthetic" else {}
    if weights == "pretrained":
        m = getattr(torchvision.models, arch)(weights="DEFAULT", **kw)
        if arch in ("googlenet", "inception_v3"):
            m.aux_logits = False; m.aux1 = m.aux2 = None
            if hasattr(m, "AuxLogits"): m.AuxLogits = None
        return m.eval()
    return OC.synthesize(getattr(torchvision.models, arch)(weights=None, **kw))


def family(arch):
    for f in ("vit", "swin", "resnet", "resnext", "wide_resnet", "regnet", "shufflenet", "googlenet", "inception",
              "mnasnet", "squeezenet", "densenet", "maxvit"):
        if arch.startswith(f):
            return f
    return "features"


def last_child(module, prefix):
    name = list(dict(module.named_children()))[-1]
    return f"{prefix}.{name}"


def default_layers(arch, m):
    """(default as pytorch-grad-cam's README, one more inside the network)."""
    f = family(arch)
    if f in ("resnet", "resnext", "wide_resnet"):
        return ["layer4", f"layer3.{len(m.layer3) - 1}"]
    if f == "vit":
        n = len(m.encoder.layers)
        return [f"encoder.layers.encoder_layer_{n - 1}.ln_1", f"encoder.layers.encoder_layer_{n // 2}"]
    if f == "swin":
        last = last_child(m.features, "features")
        lb = last_child(m.get_submodule(last), last)
        return [f"{lb}.norm1", last_child(m.features[-3], f"features.{len(m.features) - 3}")]
    if f == "regnet":
        return ["trunk_output", "trunk_output.block3"]
    if f == "shufflenet":
        return ["conv5", "stage3"]
    if f == "googlenet":
        return ["inception5b", "inception4e"]
    if f == "inception":
        return ["Mixed_7c", "Mixed_6e"]
    if f == "mnasnet":
        return [last_child(m.layers, "layers"), "layers.11"]
    # vgg, mobilenet, efficientnet, convnext, densenet, squeezenet: features[-1]
    second = "features.denseblock3" if f == "densenet" else f"features.{len(m.features) // 2}"
    return [last_child(m.features, "features"), second]


def layer_reshape(arch, m, path, shape):
    f = family(arch)
    if f == "vit" and len(shape) == 3:
        return "vit"
    if f == "swin" and len(shape) == 4 and not isinstance(m.get_submodule(path), nn.Conv2d):
        return "swin"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--exporter", choices=["ts", "dynamo"], default="ts")
    ap.add_argument("--weights", choices=["synthetic", "pretrained"], default="synthetic")
    ap.add_argument("--opset", type=int, default=None, help="default: 17 (ts), the exporter's own (dynamo)")
    ap.add_argument("--size", type=int, default=None, help="input H = W (default 224; inception_v3 299)")
    ap.add_argument("--out", default=None, help="the .onnx (default: DIR/model.onnx with --golden)")
    ap.add_argument("--golden", default=None)
    ap.add_argument("--image", default=os.path.expanduser("~/.cache/gradcam/examples/chelsea.png"))
    ap.add_argument("--layers", default=None)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--no-onnx-values", action="store_true", help="skip matching layers to ONNX values")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    size = a.size or (299 if a.model == "inception_v3" else 224)
    T = OC.Timer(); times = {}
    model = build(a.model, a.weights)
    times["build_s"] = T.lap()
    x = R.load_input(a.image, OC.MEAN, OC.STD, size=size)
    out = a.out or (os.path.join(a.golden, "model.onnx") if a.golden else f"{a.model}_{a.exporter}.onnx")
    if a.golden:
        OC.fresh_dir(a.golden)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    opset = a.opset or (17 if a.exporter == "ts" else None)
    if a.exporter == "ts":
        OC.export_ts(model, x, out, opset)
    else:
        OC.export_dynamo(model, x, out, opset=opset)
    times["export_s"] = T.lap()
    summ = OC.onnx_summary(out)
    print(json.dumps({"onnx": out, "opset": summ["opset"], "ops": summ["ops"], "nodes": summ["n_nodes"],
                      "external_data": summ["external_data"], "export_s": times["export_s"]}), flush=True)
    if not a.golden:
        sess, _ = OC.ort_session(out)
        o = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            ref = model(x).numpy()
        print(json.dumps({"onnx_vs_torch_max_abs_logit_diff": float(np.abs(o - ref).max()),
                          "max_abs_logit": float(np.abs(ref).max())}))
        return
    paths = a.layers.split(",") if a.layers else default_layers(a.model, model)
    shapes = {p: h["shape"] for p, h in OC.hook_info(model, x, paths).items()}
    layers = [(p, layer_reshape(a.model, model, p, shapes[p])) for p in paths]
    grid = None
    if family(a.model) == "vit":
        grid = (size // model.patch_size, size // model.patch_size)
    ref = OC.reference(model, x, layers, nclasses=a.classes, grid=grid)
    times["reference_s"] = T.lap()
    root = os.path.dirname(os.path.abspath(a.golden))
    input_rel = f"input_{size}x{size}.npy"
    ip = os.path.join(root, input_rel)
    if os.path.exists(ip):
        assert np.load(ip).tobytes() == x.numpy().tobytes(), f"{ip} exists with another tensor"
    else:
        np.save(ip, x.numpy())
    if a.no_onnx_values:
        OC.onnx_values_for = lambda path, feed, hooked: {p: None for p in hooked}  # noqa: E731
    reshape = layers[0][1]
    index, _ = OC.write_case(a.golden, model_name=a.model, exporter="torchscript" if a.exporter == "ts" else "dynamo",
                             onnx_path=out, ref=ref, layers=layers, input_rel=input_rel, x_feed=x.numpy(),
                             input_size=(size, size), reshape=reshape,
                             extra={"weights": a.weights, "image": os.path.basename(a.image)})
    times["check_and_write_s"] = T.lap()
    index["timings_s"] = times
    with open(os.path.join(a.golden, "index.json"), "w") as fh:
        json.dump(index, fh, indent=1)
    print(json.dumps({k: index[k] for k in ("model", "exporter", "opset", "classes", "max_abs_logit",
                                            "onnx_vs_torch_max_abs_logit_diff", "timings_s")}), flush=True)
    for l in index["layers"]:
        print(json.dumps(l))


if __name__ == "__main__":
    main()
