"""The reference timed on this machine, then `gradcam bench`, and one table with ratios (see run.sh)."""
import argparse, json, os, statistics, subprocess, sys, tempfile, time, warnings
import numpy as np
import torch, torchvision
import onnxruntime as ort
from pytorch_grad_cam import GradCAM, ScoreCAM, AblationCAM
from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

warnings.filterwarnings("ignore")
torch.set_num_threads(2)

def models():
    r = torchvision.models.resnet50(weights=None).eval()
    yield "resnet50", r, r.layer4
    from efficientnet_lite_pytorch import EfficientNet
    e = EfficientNet.from_name("efficientnet-lite0").eval()
    class Head(torch.nn.Module):  # expose conv_head -> bn1 -> ReLU6 as one module, the `head` layer
        def __init__(s, m): super().__init__(); s.m = m; s.c, s.b, s.a = m._conv_head, m._bn1, torch.nn.ReLU6()
        def forward(s, x): return s.a(s.b(s.c(x)))
    class Lite(torch.nn.Module):
        def __init__(s, m):
            super().__init__(); s.m = m; s.stem = torch.nn.Sequential(m._conv_stem, m._bn0, torch.nn.ReLU6())
            s.blocks = m._blocks; s.head = Head(m); s.fc = m._fc
        def forward(s, x):
            x = s.stem(x)
            for b in s.blocks: x = b(x)
            return s.fc(s.head(x).mean((2, 3)))
    lite = Lite(e).eval()
    yield "efficientnet_lite0", lite, lite.head

def median_ms(f, reps):
    f()
    t = []
    for _ in range(reps):
        s = time.perf_counter(); f(); t.append((time.perf_counter() - s) * 1e3)
    return statistics.median(t)

def peer_rows(reps, slow):
    rows = []
    for name, model, layer in models():
        for batch in (1, 8):
            x = torch.randn(batch, 3, 224, 224)
            with torch.no_grad():
                classes = model(x).argmax(1).tolist()
            targets = [ClassifierOutputTarget(c) for c in classes]
            def add(what, ms): rows.append(dict(model=name, batch=batch, what=what, ms_per_image=ms / batch))
            with torch.no_grad():
                add("torch forward", median_ms(lambda: model(x), reps))
            f = os.path.join(tempfile.mkdtemp(), "m.onnx")
            torch.onnx.export(model, x, f, input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
            so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.inter_op_num_threads = 1
            sess = ort.InferenceSession(f, so, providers=["CPUExecutionProvider"])
            xn = x.numpy()
            add("onnxruntime forward", median_ms(lambda: sess.run(None, {"x": xn}), reps))
            with GradCAM(model=model, target_layers=[layer]) as cam:
                add("gradcam", median_ms(lambda: cam(input_tensor=x, targets=targets), reps))
            gb = GuidedBackpropReLUModel(model=model, device=torch.device("cpu"))
            # it takes one image at a time
            add("guided-backprop", median_ms(lambda: [gb(x[i:i + 1], target_category=classes[i]) for i in range(batch)], reps))
            if batch == 1:
                for m in slow:
                    cls = {"scorecam": ScoreCAM, "ablationcam": AblationCAM}[m]
                    with cls(model=model, target_layers=[layer]) as cam:
                        add(m, median_ms(lambda: cam(input_tensor=x, targets=targets), 1))
            print(f"# peer {name} batch {batch} done", file=sys.stderr, flush=True)
    return rows

def ours(gradcam, reps, slow):
    rows = []
    out = subprocess.run([gradcam, "bench", "--json", "--reps", str(reps), "--what", "forward,gradcam,guided-backprop"],
                         check=True, capture_output=True, text=True).stdout
    doc = json.loads(out); rows += doc["rows"]; peak = doc["peak_rss_bytes"]
    if slow:
        out = subprocess.run([gradcam, "bench", "--json", "--reps", "1", "--batch", "1", "--what", ",".join(slow)],
                             check=True, capture_output=True, text=True).stdout
        rows += json.loads(out)["rows"]
    return rows, peak

def explain_peak(gradcam):
    """Peak resident memory of `gradcam explain` on one image with ResNet-50 (synthetic weights: same sizes)."""
    d = tempfile.mkdtemp(); img = os.path.join(d, "x.png")
    from PIL import Image
    Image.fromarray((np.random.rand(480, 640, 3) * 255).astype(np.uint8)).save(img)
    r = subprocess.run(["/usr/bin/time", "-f", "%M", gradcam, "explain", img, "--model", "resnet50", "--weights", "synthetic",
                        "--method", "gradcam,guided-gradcam", "-o", d], capture_output=True, text=True)
    return int(r.stderr.strip().splitlines()[-1]) * 1024

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--gradcam", required=True); ap.add_argument("--slow", default="")
    ap.add_argument("--reps", type=int, default=7); a = ap.parse_args()
    slow = [s for s in a.slow.split(",") if s]
    peer = peer_rows(a.reps, slow)
    mine, peak = ours(a.gradcam, a.reps, slow)
    get = lambda rows, m, b, w: next((r["ms_per_image"] for r in rows if r["model"] == m and r["batch"] == b and r["what"] == w), None)
    print(f"threads: 2 | torch {torch.__version__} | onnxruntime {ort.__version__} | cpu: {open('/proc/cpuinfo').read().split('model name')[1].split(chr(10))[0].strip(': ')}")
    print(f"{'model':<19} {'batch':>5} {'what':<16} {'reference ms':>13} {'gradcam ms':>11} {'speed-up':>9} {'vs onnxruntime fwd':>19}")
    for m in ("resnet50", "efficientnet_lite0"):
        for b in (1, 8):
            ort_ms = get(peer, m, b, "onnxruntime forward")
            for w, pw in (("forward", "torch forward"), ("gradcam", "gradcam"), ("guided-backprop", "guided-backprop"),
                          ("scorecam", "scorecam"), ("ablationcam", "ablationcam")):
                ref, me = get(peer, m, b, pw), get(mine, m, b, w)
                if ref is None or me is None: continue
                print(f"{m:<19} {b:>5} {w:<16} {ref:>13.1f} {me:>11.1f} {ref / me:>8.2f}x {me / ort_ms:>18.2f}x")
            print(f"{m:<19} {b:>5} {'onnxruntime fwd':<16} {ort_ms:>13.1f}")
    for m in ("resnet50", "efficientnet_lite0"):
        one, eight = get(mine, m, 1, "gradcam"), get(mine, m, 8, "gradcam")
        print(f"{m}: gradcam per image, batch 8 / batch 1 = {eight / one:.2f}")
    print(f"gradcam bench peak resident memory: {peak / 1e6:.0f} MB")
    print(f"gradcam explain, one image, resnet50, peak resident memory: {explain_peak(a.gradcam) / 1e6:.0f} MB")

main()
