"""Shared code for the ONNX golden cases (make_onnx_goldens.py, ../onnx/export_model.py): export a PyTorch model
with the TorchScript or the dynamo exporter, check it with onnxruntime, and write a case directory with
pytorch-grad-cam 1.5.7's final maps. Needs torch, torchvision, grad-cam==1.5.7, onnx, onnxruntime, onnxscript.

A case directory <root>/<name>/ holds:
  model.onnx (+ its external data file, if the exporter wrote one)
  index.json            see INDEX_DOC below (and tests/golden/onnx/README.md)
  logits.npy            (num_classes,) float32, PyTorch's logits
  <path>.<class>.<method>.npy   H x W float32: pytorch-grad-cam's grayscale_cam[0] for that target layer (module
                        path, dots), ClassifierOutputTarget(class), method in gradcam, gradcam++, layercam
The input tensor is <root>/<index.json "input"> (1,3,H,W float32, NCHW, normalised).
"""
import json, os, shutil, sys, time
import numpy as np, torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refmodels as R  # noqa: E402
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM}
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
REL_TOL = 1e-4  # onnxruntime vs PyTorch logits: max |diff| / max |logit|


def synthesize(model):
    """refmodels' synthetic weights (R.synth_tensor) on every floating-point state_dict entry, by name; integer
    buffers (Swin's relative_position_index, BN's num_batches_tracked) keep their values. Eval mode."""
    with torch.no_grad():
        for k, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            t.copy_(R.synth_tensor(k, tuple(t.shape)))
    return model.eval()


def vit_reshape(grid):
    """pytorch-grad-cam's ViT reshape_transform (tutorials / vit_example.py): drop the class token, tokens onto
    the grid (row major), channels first."""
    def f(tensor):
        result = tensor[:, 1:, :].reshape(tensor.size(0), grid[0], grid[1], tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)
    return f


def swin_reshape(tensor):
    """torchvision Swin: (B, H, W, C) -> (B, C, H, W)."""
    return tensor.permute(0, 3, 1, 2)


def reshape_fn(kind, grid=None):
    if kind is None:
        return None
    if kind == "vit":
        return vit_reshape(grid)
    if kind == "swin":
        return swin_reshape
    raise ValueError(kind)


def hook_info(model, x, paths):
    """For each module path: type, output shape as a forward hook sees it, number of calls, whether a later
    in-place op changed the output tensor, and a copy of the output as the hook first saw it."""
    rec, hs = {}, []
    for p in paths:
        m = model.get_submodule(p)
        def f(mod, i, o, p=p):
            r = rec.setdefault(p, {"calls": 0})
            r["calls"] += 1
            if r["calls"] == 1:
                r.update(type=type(mod).__name__, shape=list(o.shape), t=o, v=o._version, value=o.detach().clone())
        hs.append(m.register_forward_hook(f))
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    out = {}
    for p in paths:
        r = rec[p]
        assert r["calls"] == 1, f"{p}: called {r['calls']} times (pick a module called once)"
        out[p] = {"type": r["type"], "shape": r["shape"], "output_mutated_in_place": r["t"]._version != r["v"],
                  "value": r["value"].numpy()}
    return out


def grad_cams(model, x, layers, classes, grid=None):
    """{(path, class, method): H x W float32}: pytorch-grad-cam's grayscale_cam[0]."""
    out = {}
    H, W = x.shape[-2:]
    for path, kind in layers:
        mod = model.get_submodule(path)
        for c in classes:
            for mname, M in METHODS.items():
                with M(model=model, target_layers=[mod], reshape_transform=reshape_fn(kind, grid)) as cam:
                    g = cam(input_tensor=x, targets=[ClassifierOutputTarget(c)])[0].astype(np.float32)
                assert g.shape == (H, W) and np.isfinite(g).all(), (path, c, mname, g.shape)
                out[(path, c, mname)] = g
    return out


# ----------------------------------------------------------------------------------------------- export
def export_ts(model, x, path, opset, dynamic_axes=None):
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset, input_names=["input"],
                      output_names=["logits"], dynamic_axes=dynamic_axes, do_constant_folding=True)


def export_dynamo(model, x, path, rename_to=None, opset=None):
    """dynamo exporter (its default opset unless given); keeps the external data file it writes. With rename_to,
    model.onnx is renamed after the export, so that the data file keeps the old name (tests `location`)."""
    kw = {} if opset is None else {"opset_version": opset}
    torch.onnx.export(model, (x,), path, dynamo=True, input_names=["input"], output_names=["logits"], **kw)
    strip_stack_traces(path)
    if rename_to is not None:
        os.replace(path, rename_to)
        return rename_to
    return path


STRIPPED_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node", "namespace")


def strip_stack_traces(path):
    """Drop three of the dynamo exporter's per-node metadata entries: "pkg.torch.onnx.stack_trace" (Python file
    paths of the machine that exported; a third of the file), "pkg.torch.onnx.fx_node" (the FX node as text) and
    "namespace" (the same module paths and classes as name_scopes and class_hierarchy, joined in one string).
    Everything else (pkg.torch.onnx.name_scopes, pkg.torch.onnx.class_hierarchy, value_info, the external data
    references) stays as the exporter wrote it."""
    import onnx
    m = onnx.load(path, load_external_data=False)
    for n in m.graph.node:
        keep = [p for p in n.metadata_props if p.key not in STRIPPED_METADATA]
        del n.metadata_props[:]
        n.metadata_props.extend(keep)
    onnx.save(m, path)


def onnx_summary(path):
    import onnx
    m = onnx.load(path, load_external_data=False)
    ops = sorted(set(n.op_type for n in m.graph.node))
    opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=None)
    locs = sorted({e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"})
    return {"ops": ops, "opset": opset, "external_data": locs, "functions": [f.name for f in m.functions],
            "n_nodes": len(m.graph.node), "n_initializers": len(m.graph.initializer)}


def ort_session(path, extra_outputs=False):
    """onnxruntime session; with extra_outputs every float intermediate value is also an output."""
    import onnx, onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 2
    if not extra_outputs:
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]), None
    m = onnx.load(path)  # with its external data
    m = onnx.shape_inference.infer_shapes(m)
    have = {o.name for o in m.graph.output}
    vi = {v.name: v for v in m.graph.value_info}
    names = []
    for n in m.graph.node:
        for o in n.output:
            if o and o not in have and o in vi and vi[o].type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
                m.graph.output.append(vi[o]); names.append(o); have.add(o)
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]), names


def onnx_values_for(path, feed, hooked):
    """For each hooked module: the names of the ONNX values (node outputs, graph order) equal to the module's
    output as the forward hook first saw it (same shape, max |diff| <= 1e-4 * (1 + max |value|))."""
    sess, names = ort_session(path, extra_outputs=True)
    outs = sess.run(None, feed)
    allnames = [o.name for o in sess.get_outputs()]
    vals = dict(zip(allnames, outs))
    res = {}
    for p, h in hooked.items():
        ref = h["value"]
        tol = 1e-4 * (1 + float(np.abs(ref).max()))
        res[p] = [n for n in names if vals[n].shape == ref.shape and float(np.abs(vals[n] - ref).max()) <= tol]
    return res


# ----------------------------------------------------------------------------------------------- cases
def reference(model, x, layers, nclasses=2, grid=None, x_model=None):
    """PyTorch logits, top classes, hook info and the maps. x_model: what the exported model takes (defaults to
    x); the maps are computed with x on `model` (pytorch-grad-cam needs NCHW)."""
    with torch.no_grad():
        logits = model(x)[0]
    assert torch.isfinite(logits).all()
    classes = [int(c) for c in logits.topk(nclasses).indices]
    hooked = hook_info(model, x, [p for p, _ in layers])
    maps = grad_cams(model, x, layers, classes, grid)
    return {"logits": logits.numpy().astype(np.float32), "classes": classes, "hooked": hooked, "maps": maps}


def write_case(case_dir, *, model_name, exporter, onnx_path, ref, layers, input_rel, x_feed, input_size,
               extra=None, mean=MEAN, std=STD, default_layer=None, reshape=None, check=True, onnx_target=None):
    """Write logits, maps and index.json for an exported model already at case_dir/model.onnx. onnx_target: what
    the ONNX output must reproduce (PyTorch's output of the exported forward; default: the logits)."""
    os.makedirs(case_dir, exist_ok=True)
    logits = ref["logits"]
    np.save(os.path.join(case_dir, "logits.npy"), logits)
    summ = onnx_summary(onnx_path)
    sess, _ = ort_session(onnx_path)
    onnx_logits = sess.run(None, {sess.get_inputs()[0].name: x_feed})[0].reshape(-1)
    target = logits if onnx_target is None else np.asarray(onnx_target, np.float32).reshape(-1)
    diff = float(np.abs(onnx_logits - target).max())
    max_abs = float(np.abs(logits).max())
    if check and diff > REL_TOL * float(np.abs(target).max()):
        raise SystemExit(f"{case_dir}: onnxruntime vs PyTorch logits differ by {diff} (max |logit| {max_abs})")
    onnx_vals = onnx_values_for(onnx_path, {sess.get_inputs()[0].name: x_feed}, ref["hooked"])
    files = ["model.onnx"] + summ["external_data"] + ["logits.npy"]
    linfo = []
    for path, kind in layers:
        h = ref["hooked"][path]
        linfo.append({"path": path, "type": h["type"], "shape": h["shape"], "reshape": kind,
                      "output_mutated_in_place": h["output_mutated_in_place"], "onnx_values": onnx_vals[path]})
        for c in ref["classes"]:
            for mname in METHODS:
                f = f"{path}.{c}.{mname}.npy"
                np.save(os.path.join(case_dir, f), ref["maps"][(path, c, mname)])
                files.append(f)
    g_in = [list(i.shape) for i in sess.get_inputs()]
    index = {
        "model": model_name, "exporter": exporter, "opset": summ["opset"], "input": input_rel,
        "input_size": list(input_size), "mean": list(mean), "std": list(std), "num_classes": int(logits.shape[0]),
        "classes": ref["classes"], "max_abs_logit": max_abs, "reshape": reshape,
        "default_layer": default_layer or layers[0][0], "layers": linfo, "methods": list(METHODS),
        "onnx_vs_torch_max_abs_logit_diff": diff,
        "onnx_input_shape": g_in[0], "onnx_ops": summ["ops"], "external_data": summ["external_data"],
        "files": files,
    }
    if extra:
        index.update(extra)
    with open(os.path.join(case_dir, "index.json"), "w") as fh:
        json.dump(index, fh, indent=1)
    return index, summ


def dir_size(d):
    return sum(os.path.getsize(os.path.join(a, f)) for a, _, fs in os.walk(d) for f in fs)


def fresh_dir(d):
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)


class Timer:
    def __init__(self): self.t = time.time()
    def lap(self):
        t, self.t = self.t, time.time()
        return round(self.t - t, 2)
