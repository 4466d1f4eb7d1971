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

class Setup:
    """One model at one batch size, with everything the reference needs made once (the ONNX export too)."""
    def __init__(self, name, model, layer, batch):
        self.name, self.model, self.layer, self.batch = name, model, layer, batch
        self.x = torch.randn(batch, 3, 224, 224)
        with torch.no_grad():
            self.classes = model(self.x).argmax(1).tolist()
        self.targets = [ClassifierOutputTarget(c) for c in self.classes]
        f = os.path.join(tempfile.mkdtemp(), "m.onnx")
        torch.onnx.export(model, self.x, f, input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
        so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(f, so, providers=["CPUExecutionProvider"])

    def fast(self, reps):
        """(what, ms per image) of the quick measurements, each after the previous one's threads settled."""
        x, b, out = self.x, self.batch, []
        with torch.no_grad():
            out.append(("torch forward", median_ms(lambda: self.model(x), reps) / b))
        xn = x.numpy()
        settle()
        out.append(("onnxruntime forward", median_ms(lambda: self.sess.run(None, {"x": xn}), reps) / b))
        settle()
        with GradCAM(model=self.model, target_layers=[self.layer]) as cam:
            out.append(("gradcam", median_ms(lambda: cam(input_tensor=x, targets=self.targets), reps) / b))
        gb = GuidedBackpropReLUModel(model=self.model, device=torch.device("cpu"))
        # it takes one image at a time
        out.append(("guided-backprop", median_ms(
            lambda: [gb(x[i:i + 1], target_category=self.classes[i]) for i in range(b)], reps) / b))
        settle()
        return out

    def slow(self, methods):
        out = []
        for m in methods:
            cls = {"scorecam": ScoreCAM, "ablationcam": AblationCAM}[m]
            with cls(model=self.model, target_layers=[self.layer]) as cam:
                out.append((m, median_ms(lambda: cam(input_tensor=self.x, targets=self.targets), 1) / self.batch))
        return out

def isa_env(isa):
    """The environment for `gradcam bench` with its kernels' instruction set forced (None: its own choice)."""
    env = dict(os.environ)
    env.pop("GRADCAM_ISA", None)
    if isa:
        env["GRADCAM_ISA"] = isa
    return env

def ours_fast(gradcam, reps, isa):
    out = subprocess.run([gradcam, "bench", "--json", "--reps", str(reps), "--what", "forward,gradcam,guided-backprop"],
                         check=True, capture_output=True, text=True, env=isa_env(isa)).stdout
    doc = json.loads(out)
    return doc["rows"], doc["peak_rss_bytes"], doc.get("fma_peak_gflops"), doc.get("isa")

def ours_slow(gradcam, slow, isa):
    out = subprocess.run([gradcam, "bench", "--json", "--reps", "1", "--batch", "1", "--what", ",".join(slow)],
                         check=True, capture_output=True, text=True, env=isa_env(isa)).stdout
    return json.loads(out)["rows"]

def settle():
    """Let the reference's worker threads go idle: OpenMP's and onnxruntime's spin on after their last call and
    would take cores from whatever runs next (measured: gradcam's ResNet-50 forward 40 ms instead of 27)."""
    time.sleep(2)

def measure(gradcam, reps, rounds, slow, isas):
    """The quick measurements in interleaved rounds, reference then gradcam (once per instruction set asked
    for), each figure the lowest of its rounds' medians (the machine's background load varies over minutes, and
    hits both sides alike); then the slow methods once each."""
    setups = [Setup(n, m, l, b) for n, m, l in models() for b in (1, 8)]
    best_peer, best_mine, peak = {}, {i: {} for i in isas}, 0
    global FMA_PEAK, GFLOP, ISA_NAME
    FMA_PEAK, GFLOP, ISA_NAME = {}, {}, {}
    keep = lambda d, k, v: d.__setitem__(k, min(v, d.get(k, float("inf"))))
    for r in range(rounds):
        for s in setups:
            for what, ms in s.fast(reps):
                keep(best_peer, (s.name, s.batch, what), ms)
        for isa in isas:
            settle()
            rows, p, fma, name = ours_fast(gradcam, reps, isa)
            ISA_NAME[isa] = name
            peak = max(peak, p)
            FMA_PEAK[isa] = max(FMA_PEAK.get(isa, 0.0), fma or 0.0)
            for row in rows:
                if row.get("gflop_per_image"):
                    GFLOP[row["model"]] = row["gflop_per_image"]
                keep(best_mine[isa], (row["model"], row["batch"], row["what"]), row["ms_per_image"])
        print(f"# round {r + 1} of {rounds} done", file=sys.stderr, flush=True)
    if slow:
        for s in setups:
            if s.batch == 1:
                for what, ms in s.slow(slow):
                    best_peer[(s.name, 1, what)] = ms
        for isa in isas:
            settle()
            for row in ours_slow(gradcam, slow, isa):
                best_mine[isa][(row["model"], row["batch"], row["what"])] = row["ms_per_image"]
    as_rows = lambda d: [dict(model=m, batch=b, what=w, ms_per_image=v) for (m, b, w), v in d.items()]
    return as_rows(best_peer), {i: as_rows(d) for i, d in best_mine.items()}, peak

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
    ap.add_argument("--reps", type=int, default=7); ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--isa", default="", help="gradcam's kernels, comma list (avx512,avx2,scalar): one table each; default its own choice")
    a = ap.parse_args()
    slow = [s for s in a.slow.split(",") if s]
    isas = [i for i in a.isa.split(",") if i] or [None]
    peer, mine_by_isa, peak = measure(a.gradcam, a.reps, a.rounds, slow, isas)
    get = lambda rows, m, b, w: next((r["ms_per_image"] for r in rows if r["model"] == m and r["batch"] == b and r["what"] == w), None)
    print(f"quick figures: lowest of {a.rounds} interleaved rounds' medians of {a.reps}; scorecam/ablationcam: one run")
    print(f"threads: 2 | torch {torch.__version__} | onnxruntime {ort.__version__} | cpu: {open('/proc/cpuinfo').read().split('model name')[1].split(chr(10))[0].strip(': ')}")
    for isa in isas:
        mine = mine_by_isa[isa]
        print(f"\ngradcam's kernels: {ISA_NAME.get(isa)}" + (" (forced by GRADCAM_ISA)" if isa else " (its own choice)"))
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
        fma_peak = FMA_PEAK.get(isa)
        if fma_peak:
            print(f"multiply-add peak with {ISA_NAME.get(isa)} vectors (gradcam bench's probe, all threads): {fma_peak:.0f} GFLOP/s")
            for m in ("resnet50", "efficientnet_lite0"):
                g = GFLOP.get(m)
                if not g: continue
                rate = lambda ms: f"{g / ms * 1e3:.0f} GFLOP/s ({100 * g / ms * 1e3 / fma_peak:.0f}%)"
                sides = [("gradcam", get(mine, m, 1, "forward")), ("onnxruntime", get(peer, m, 1, "onnxruntime forward")),
                         ("torch", get(peer, m, 1, "torch forward"))]
                print(f"{m}, batch 1 forward, {g:.2f} GFLOP of convolutions: " + ", ".join(f"{n} {rate(ms)}" for n, ms in sides if ms))
                sc = get(peer, m, 1, "scorecam")
                if sc:
                    ms = sc / 3 / (2048 if m == "resnet50" else 1280)
                    print(f"  ScoreCAM 3x the reference needs a forward in {ms:.1f} ms: {g / ms * 1e3:.0f} GFLOP/s ({100 * g / ms * 1e3 / fma_peak:.0f}% of the peak)")
    print(f"gradcam bench peak resident memory: {peak / 1e6:.0f} MB")
    print(f"gradcam explain, one image, resnet50, peak resident memory: {explain_peak(a.gradcam) / 1e6:.0f} MB")

main()
