"""Goldens for torchvision architectures with the synthetic weights (refmodels.torchvision_model), from PyTorch +
pytorch-grad-cam 1.5.7 (the reference). Regenerates tests/golden/torchvision/ exactly:

    python scripts/golden/make_torchvision_goldens.py [--out tests/golden/torchvision]
        [--image ~/.cache/gradcam/examples/chelsea.png] [--models vgg11_bn,mobilenet_v2,...]

needs: pip install torch torchvision grad-cam==1.5.7 (and the example photos: scripts/fetch-assets.sh).

Writes, under OUT:
  input.<stem>.npy                    1x3x224x224 float32, the input tensor shared by every model (checked bit-identical);
                                      not written when tests/golden/resnet50/<stem>/input.npy is bit-identical to it
                                      (index.json's "input" names the file, relative to the repository root)
  <model>/logits.npy                  1000 float32
  <model>/<layer>.<c>.gradcam_raw.npy h x w: sum_k mean_ij(G_k) * A_k with A, G exactly as pytorch-grad-cam's
                                      ActivationsAndGradients records them (see README: in-place activations)
  <model>/<layer>.<c>.<m>.sub4.npy    the reference's final 224x224 map [::4, ::4] (56x56), m in gradcam, gradcam++, layercam
  <model>/gb.<c>.sub4.npy             Guided Backprop (guided ReLU and ReLU6 modules, refmodels.guidify), 3x224x224 [:, ::4, ::4]
  <model>/gb-relu-only.<c>.sub4.npy   only where it differs: pytorch-grad-cam's GuidedBackpropReLUModel (guides nn.ReLU only)
  <model>/index.json                  top-5, classes, layers (path, module type, output shape), files, sanity numbers
  <model>/modules.json                every named module in order of first call: path, type, output shape; "calls" when
                                      called more than once, "mutated" when a later in-place op changes its output tensor
"""
import argparse, json, os, sys
import numpy as np, torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refmodels as R
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, GuidedBackpropReLUModel
from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

# (a) the default target (pytorch-grad-cam README style: features[-1]); (b) one node inside a block
LAYERS = {
    "vgg11_bn": ["features.28", "features.25"],                       # last MaxPool; last Conv2d (pre-BN)
    # last ConvBNReLU6; a depthwise ConvBNReLU6 (its Grad-CAM is all zero for both classes: every raw value < 0), and
    # a second depthwise ConvBNReLU6 whose Grad-CAM is not
    "mobilenet_v2": ["features.18", "features.5.conv.1", "features.12.conv.1"],
    "mobilenet_v3_small": ["features.12", "features.4.block.2"],      # last ConvBNHardswish; SE (ReLU/Hardsigmoid)
    "densenet121": ["features.norm5", "features.denseblock3.denselayer5.conv2"],
    "efficientnet_b0": ["features.8", "features.3.0.block.2"],        # last ConvBNSiLU; SE (SiLU/Sigmoid)
    "convnext_tiny": ["features.7", "features.5.3.block.0"],          # last stage; a depthwise 7x7 conv
    "regnet_y_400mf": ["trunk_output", "trunk_output.block3.block3-2.f.se"],
    "regnet_x_400mf": ["trunk_output", "trunk_output.block3.block3-2.f.b.0"],  # grouped conv, pre-BN
}
GB_MODELS = ("vgg11_bn", "mobilenet_v2")
METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM}
NCLASSES = 2


def shape_of(o):
    if isinstance(o, torch.Tensor): return list(o.shape)
    if isinstance(o, (tuple, list)): return [shape_of(t) for t in o]
    return None


def module_list(model, x):
    """Every named module (root excluded) in order of first call, with its output shape and type."""
    rec, order, hs = {}, [], []
    def hook(name):
        def f(m, i, o):
            if name not in rec:
                order.append(name)
                rec[name] = {"path": name, "type": type(m).__name__, "shape": shape_of(o), "calls": 0,
                             "_t": o if isinstance(o, torch.Tensor) else None,
                             "_v": o._version if isinstance(o, torch.Tensor) else None}
            rec[name]["calls"] += 1
        return f
    for n, m in model.named_modules():
        if n: hs.append(m.register_forward_hook(hook(n)))
    with torch.no_grad(): model(x)
    for h in hs: h.remove()
    out = []
    for n in order:
        r = rec[n]
        e = {"path": n, "type": r["type"], "shape": r["shape"]}
        if r["calls"] > 1: e["calls"] = r["calls"]
        if r["_t"] is not None and r["_t"]._version != r["_v"]: e["mutated"] = True
        out.append(e)
    called = set(order)
    for n, m in model.named_modules():  # modules never called in forward (none expected)
        if n and n not in called: out.append({"path": n, "type": type(m).__name__, "shape": None, "calls": 0})
    return out


def sub4(a):
    return np.ascontiguousarray(a[..., ::4, ::4]).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--out", default=os.path.join(root, "tests/golden/torchvision"))
    ap.add_argument("--image", default=os.path.expanduser("~/.cache/gradcam/examples/chelsea.png"))
    ap.add_argument("--models", default=",".join(LAYERS))
    a = ap.parse_args()
    torch.set_num_threads(2)
    stem = os.path.splitext(os.path.basename(a.image))[0]
    os.makedirs(a.out, exist_ok=True)
    x_shared, input_rel = None, None
    for arch in a.models.split(","):
        d = os.path.join(a.out, arch); os.makedirs(d, exist_ok=True)
        model = R.torchvision_model(arch)
        x = R.load_input(a.image, model.mean, model.std)
        if x_shared is None:
            x_shared = x.numpy().copy()
            p = os.path.join(a.out, f"input.{stem}.npy")
            same = os.path.join(root, "tests/golden/resnet50", stem, "input.npy")
            if os.path.exists(same) and np.load(same).tobytes() == x_shared.tobytes():
                input_rel = os.path.relpath(same, root)  # the same tensor is already in the repository
                if os.path.exists(p): os.remove(p)
            else:
                np.save(p, x_shared); input_rel = os.path.relpath(p, root)
        assert x.numpy().tobytes() == x_shared.tobytes(), f"{arch}: input tensor not bit-identical"
        with torch.no_grad(): logits = model(x)[0]
        assert torch.isfinite(logits).all(), arch
        np.save(f"{d}/logits.npy", logits.numpy())
        classes = [int(c) for c in logits.topk(NCLASSES).indices]
        mods = module_list(model, x)
        json.dump(mods, open(f"{d}/modules.json", "w"), separators=(",", ":"))
        bypath = {m["path"]: m for m in mods}
        entry = {"model": arch, "image": os.path.basename(a.image), "input": input_rel,
                 "mean": model.mean, "std": model.std,
                 "top5": [int(c) for c in logits.topk(5).indices],
                 "top5_logits": [float(v) for v in logits.topk(5).values],
                 "max_abs_logit": float(logits.abs().max()), "logit_std": float(logits.std()),
                 "classes": classes, "methods": list(METHODS), "layers": [], "files": ["logits.npy", "modules.json"]}
        for layer in LAYERS[arch]:
            mod = model.get_submodule(layer)
            info = {"path": layer, "type": type(mod).__name__, "shape": bypath[layer]["shape"],
                    "output_mutated_in_place": bool(bypath[layer].get("mutated", False)), "per_class": {}}
            for c in classes:
                # what pytorch-grad-cam sees: its own ActivationsAndGradients
                aag = ActivationsAndGradients(model, [mod], None)
                y = aag(x); model.zero_grad(); y[0, c].backward()
                A, G = aag.activations[0], aag.gradients[0]; aag.release()
                raw = (G.mean((2, 3), keepdim=True) * A).sum(1)[0].numpy().astype(np.float32)
                f = f"{layer}.{c}.gradcam_raw.npy"; np.save(f"{d}/{f}", raw); entry["files"].append(f)
                stats = {"max_abs_activation": float(A.abs().max()), "max_abs_gradient": float(G.abs().max()),
                         "max_abs_gradcam_raw": float(np.abs(raw).max()), "positive_fraction_raw": float((raw > 0).mean())}
                for mname, M in METHODS.items():
                    with M(model=model, target_layers=[mod]) as cam:
                        out = cam(input_tensor=x, targets=[ClassifierOutputTarget(c)])[0].astype(np.float32)
                    assert out.shape == (224, 224) and np.isfinite(out).all(), (arch, layer, c, mname)
                    stats[f"{mname}_range"] = [float(out.min()), float(out.max())]
                    if not out.any(): stats[f"{mname}_all_zero"] = True
                    if mname == "gradcam":  # consistency of the raw map with the reference's final one:
                        # ReLU, min-max, cv2 bilinear resize, min-max again (pytorch-grad-cam's aggregate_multi_layers)
                        mine = scale_cam_image(scale_cam_image(np.maximum(raw, 0)[None], (224, 224)))[0]
                        stats["gradcam_vs_raw_max_diff"] = float(np.abs(mine - out).max())
                    f = f"{layer}.{c}.{mname}.sub4.npy"; np.save(f"{d}/{f}", sub4(out)); entry["files"].append(f)
                info["per_class"][str(c)] = stats
                print(f"{arch} {layer} {c} {json.dumps(stats)}", flush=True)
            entry["layers"].append(info)
        if arch in GB_MODELS:
            entry["gb"] = {}
            for c in classes:
                gm = R.guidify(R.torchvision_model(arch))
                xx = x.clone().requires_grad_(True)
                gm(xx)[0, c].backward()
                gb = xx.grad[0].numpy()
                pgc = GuidedBackpropReLUModel(R.torchvision_model(arch), device="cpu")(x.clone(), target_category=c)
                pgc = pgc.transpose(2, 0, 1)
                f = f"gb.{c}.sub4.npy"; np.save(f"{d}/{f}", sub4(gb)); entry["files"].append(f)
                diff = float(np.abs(gb - pgc).max())
                entry["gb"][str(c)] = {"max_abs": float(np.abs(gb).max()), "nonzero_fraction": float((gb != 0).mean()),
                                       "max_diff_vs_pytorch_grad_cam_relu_only": diff}
                if diff > 0:
                    f = f"gb-relu-only.{c}.sub4.npy"; np.save(f"{d}/{f}", sub4(pgc)); entry["files"].append(f)
                print(f"{arch} gb {c} {entry['gb'][str(c)]}", flush=True)
        json.dump(entry, open(f"{d}/index.json", "w"), indent=1)


if __name__ == "__main__":
    main()
