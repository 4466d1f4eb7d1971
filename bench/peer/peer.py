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

ALL = ("resnet50", "efficientnet_lite0", "vgg16", "mobilenet_v3_large", "densenet121", "efficientnet_b0", "convnext_tiny")

def efficientnet_lite0():
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
    return lite, lite.head

def torchvision_model(name):
    """A torchvision model with random weights and its target layer: `features[-1]`, the layer gradcam uses by
    default (vgg16 features.30, mobilenet_v3_large features.16, densenet121 features.norm5, efficientnet_b0
    features.8, convnext_tiny features.7)."""
    m = getattr(torchvision.models, name)(weights=None).eval()
    return m, m.features[-1]

def models(names):
    """(name, model, target layer, input size) of each model asked for, in the order asked."""
    for n in names:
        if n == "resnet50":
            r = torchvision.models.resnet50(weights=None).eval()
            yield n, r, r.layer4, 224
        elif n == "efficientnet_lite0":
            yield (n, *efficientnet_lite0(), 224)
        else:
            yield (n, *torchvision_model(n), 224)

def median_ms(f, reps, budget_ms=0):
    """Median of `reps` calls after a warm-up; with a budget, fewer (at least 3) when the warm-up says `reps` would
    take longer than that."""
    s = time.perf_counter(); f(); first = (time.perf_counter() - s) * 1e3
    if budget_ms:
        reps = max(min(reps, 3), min(reps, int(budget_ms / max(first, 1e-3))))
    t = []
    for _ in range(reps):
        s = time.perf_counter(); f(); t.append((time.perf_counter() - s) * 1e3)
    return statistics.median(t)

class Setup:
    """One model at one batch size, with everything the reference needs made once (the ONNX export too)."""
    def __init__(self, name, model, layer, size, batch, budget_ms):
        self.name, self.model, self.layer, self.batch, self.budget_ms = name, model, layer, batch, budget_ms
        self.x = torch.randn(batch, 3, size, size)
        seen = []
        h = layer.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
        with torch.no_grad():
            self.classes = model(self.x).argmax(1).tolist()
        h.remove()
        self.channels = seen[0]  # the target layer's channels: ScoreCAM runs one forward per channel
        self.targets = [ClassifierOutputTarget(c) for c in self.classes]
        # named after the model: `gradcam bench --model file.onnx` (--onnx, which takes batch 1's) reports the file's
        # name as the model
        f = self.onnx = os.path.join(tempfile.mkdtemp(), f"{name}.onnx")
        torch.onnx.export(model, self.x, f, input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
        so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(f, so, providers=["CPUExecutionProvider"])

    def fast(self, reps):
        """(what, ms per image) of the quick measurements, each after the previous one's threads settled."""
        x, b, out = self.x, self.batch, []
        med = lambda f: median_ms(f, reps, self.budget_ms) / b
        with torch.no_grad():
            out.append(("torch forward", med(lambda: self.model(x))))
        xn = x.numpy()
        settle()
        out.append(("onnxruntime forward", med(lambda: self.sess.run(None, {"x": xn}))))
        settle()
        with GradCAM(model=self.model, target_layers=[self.layer]) as cam:
            out.append(("gradcam", med(lambda: cam(input_tensor=x, targets=self.targets))))
        gb = GuidedBackpropReLUModel(model=self.model, device=torch.device("cpu"))
        # it takes one image at a time
        out.append(("guided-backprop", med(lambda: [gb(x[i:i + 1], target_category=self.classes[i]) for i in range(b)])))
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
    env["GRADCAM_OFFLINE"] = "1"  # never download: cached pretrained weights if there are some, else synthetic ones
    if isa:
        env["GRADCAM_ISA"] = isa
    return env

def ours_fast(gradcam, names, reps, isa):
    out = subprocess.run([gradcam, "bench", "--json", "--model", ",".join(names), "--reps", str(reps),
                          "--what", "forward,gradcam,guided-backprop"],
                         check=True, capture_output=True, text=True, env=isa_env(isa)).stdout
    doc = json.loads(out)
    return doc["rows"], doc["peak_rss_bytes"], doc.get("fma_peak_gflops"), doc.get("isa")

def ours_slow(gradcam, names, slow, isa):
    out = subprocess.run([gradcam, "bench", "--json", "--model", ",".join(names), "--reps", "1", "--batch", "1",
                          "--what", ",".join(slow)],
                         check=True, capture_output=True, text=True, env=isa_env(isa)).stdout
    return json.loads(out)["rows"]

def ours_onnx(gradcam, setups, reps, isa):
    """`gradcam bench` on the reference's own ONNX exports (`Setup.onnx`), the same repetitions and instruction set
    as `ours_fast`; rows keyed by the model's name, not the file's. gradcam takes the export made at batch 1 (it
    refuses a fixed batch of 8) and times both batch sizes on it, as its native model. The exports carry the
    reference's weights (random), `ours_fast` gradcam's own (cached pretrained or synthetic): the speed does not
    depend on the weights' values, so the two compare. A model gradcam fails to import is left out, with the
    reason on stderr, rather than ending the run."""
    rows, peak = [], 0
    for s in (s for s in setups if s.batch == 1):
        batches = ",".join(str(t.batch) for t in setups if t.name == s.name)
        r = subprocess.run([gradcam, "bench", "--json", "--model", s.onnx, "--batch", batches, "--reps", str(reps),
                            "--what", "forward,gradcam"], capture_output=True, text=True, env=isa_env(isa))
        if r.returncode != 0:
            ONNX_FAILED[s.name] = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
            print(f"# gradcam bench --model {s.onnx}: {ONNX_FAILED[s.name]}", file=sys.stderr, flush=True)
            continue
        doc = json.loads(r.stdout)
        peak = max(peak, doc["peak_rss_bytes"] or 0)
        rows += [dict(row, model=s.name) for row in doc["rows"] if row["model"] == os.path.basename(s.onnx)]
    return rows, peak

ONNX_FAILED = {}

def settle():
    """Let the reference's worker threads go idle: OpenMP's and onnxruntime's spin on after their last call and
    would take cores from whatever runs next (measured: gradcam's ResNet-50 forward 40 ms instead of 27)."""
    time.sleep(2)

def measure(gradcam, names, reps, rounds, slow, isas, budget_ms, onnx=()):
    """The quick measurements in interleaved rounds, reference then gradcam (once per instruction set asked
    for; then, for the models in `onnx`, gradcam on the reference's ONNX export), each figure the lowest of its
    rounds' medians (the machine's background load varies over minutes, and hits both sides alike); then the slow
    methods once each."""
    setups = [Setup(n, m, l, size, b, budget_ms) for n, m, l, size in models(names) for b in (1, 8)]
    CHANNELS.update({s.name: s.channels for s in setups})
    best_peer, best_mine, peak = {}, {i: {} for i in isas}, 0
    best_onnx, onnx_peak = {i: {} for i in isas}, 0
    global FMA_PEAK, GFLOP, ISA_NAME
    FMA_PEAK, GFLOP, ISA_NAME = {}, {}, {}
    keep = lambda d, k, v: d.__setitem__(k, min(v, d.get(k, float("inf"))))
    for r in range(rounds):
        for s in setups:
            for what, ms in s.fast(reps):
                keep(best_peer, (s.name, s.batch, what), ms)
        for isa in isas:
            settle()
            rows, p, fma, name = ours_fast(gradcam, names, reps, isa)
            ISA_NAME[isa] = name
            peak = max(peak, p)
            FMA_PEAK[isa] = max(FMA_PEAK.get(isa, 0.0), fma or 0.0)
            for row in rows:
                if row.get("gflop_per_image"):
                    GFLOP[row["model"]] = row["gflop_per_image"]
                keep(best_mine[isa], (row["model"], row["batch"], row["what"]), row["ms_per_image"])
            todo = [s for s in setups if s.name in onnx and s.name not in ONNX_FAILED]
            if todo:
                settle()
                rows, p = ours_onnx(gradcam, todo, reps, isa)
                onnx_peak = max(onnx_peak, p)
                for row in rows:
                    keep(best_onnx[isa], (row["model"], row["batch"], row["what"]), row["ms_per_image"])
        print(f"# round {r + 1} of {rounds} done", file=sys.stderr, flush=True)
    if slow:
        for s in setups:
            if s.batch == 1:
                for what, ms in s.slow(slow):
                    best_peer[(s.name, 1, what)] = ms
        for isa in isas:
            settle()
            for row in ours_slow(gradcam, names, slow, isa):
                best_mine[isa][(row["model"], row["batch"], row["what"])] = row["ms_per_image"]
    as_rows = lambda d: [dict(model=m, batch=b, what=w, ms_per_image=v) for (m, b, w), v in d.items()]
    return (as_rows(best_peer), {i: as_rows(d) for i, d in best_mine.items()}, peak,
            {i: as_rows(d) for i, d in best_onnx.items()}, onnx_peak)

CHANNELS = {}

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
    ap.add_argument("--models", default=",".join(ALL), help=f"comma list, default all: {','.join(ALL)}")
    ap.add_argument("--budget-s", type=float, default=0,
                    help="the reference's repetitions cut (to at least 3) where they would take longer than this")
    ap.add_argument("--onnx", default="",
                    help="comma list of the models also timed as `gradcam bench --model <the reference's ONNX export>` "
                         "(forward and Grad-CAM; target: at most 1.10x gradcam's native model), or 'all'; default none")
    a = ap.parse_args()
    names = [m for m in a.models.split(",") if m]
    unknown = [m for m in names if m not in ALL]
    if unknown or not names:
        ap.error(f"--models {a.models}: expected some of {','.join(ALL)}")
    slow = [s for s in a.slow.split(",") if s]
    isas = [i for i in a.isa.split(",") if i] or [None]
    onnx = names if a.onnx == "all" else [m for m in names if m in a.onnx.split(",")]
    if a.onnx not in ("", "all") and any(m not in ALL for m in a.onnx.split(",") if m):
        ap.error(f"--onnx {a.onnx}: expected 'all' or some of {','.join(ALL)}")
    peer, mine_by_isa, peak, onnx_by_isa, onnx_peak = measure(a.gradcam, names, a.reps, a.rounds, slow, isas,
                                                              a.budget_s * 1e3, onnx)
    get = lambda rows, m, b, w: next((r["ms_per_image"] for r in rows if r["model"] == m and r["batch"] == b and r["what"] == w), None)
    cut = f" (the reference's cut to fit {a.budget_s:g} s, at least 3)" if a.budget_s else ""
    print(f"quick figures: lowest of {a.rounds} interleaved rounds' medians of {a.reps}{cut}; scorecam/ablationcam: one run")
    print(f"threads: 2 | torch {torch.__version__} | onnxruntime {ort.__version__} | cpu: {open('/proc/cpuinfo').read().split('model name')[1].split(chr(10))[0].strip(': ')}")
    for isa in isas:
        mine = mine_by_isa[isa]
        print(f"\ngradcam's kernels: {ISA_NAME.get(isa)}" + (" (forced by GRADCAM_ISA)" if isa else " (its own choice)"))
        print(f"{'model':<19} {'batch':>5} {'what':<16} {'reference ms':>13} {'gradcam ms':>11} {'speed-up':>9} {'vs onnxruntime fwd':>19}")
        for m in names:
            for b in (1, 8):
                ort_ms = get(peer, m, b, "onnxruntime forward")
                for w, pw in (("forward", "torch forward"), ("gradcam", "gradcam"), ("guided-backprop", "guided-backprop"),
                              ("scorecam", "scorecam"), ("ablationcam", "ablationcam")):
                    ref, me = get(peer, m, b, pw), get(mine, m, b, w)
                    if ref is None or me is None: continue
                    print(f"{m:<19} {b:>5} {w:<16} {ref:>13.1f} {me:>11.1f} {ref / me:>8.2f}x {me / ort_ms:>18.2f}x")
                print(f"{m:<19} {b:>5} {'onnxruntime fwd':<16} {ort_ms:>13.1f}")
        for m in names:
            one, eight = get(mine, m, 1, "gradcam"), get(mine, m, 8, "gradcam")
            print(f"{m}: gradcam per image, batch 8 / batch 1 = {eight / one:.2f}")
        imported = onnx_by_isa[isa]
        if onnx:
            # the export has the reference's (random) weights, gradcam's native model its own (cached pretrained or
            # synthetic): the same speed, which does not depend on the weights' values
            print("gradcam on the reference's ONNX export (TorchScript exporter, opset 17, random weights) against its "
                  "native model; ms per image")
            print(f"{'model':<19} {'batch':>5} {'what':<21} {'forward ms':>10} {'native':>7} {'ratio':>6} "
                  f"{'Grad-CAM ms':>11} {'native':>7} {'ratio':>6}")
            for m in onnx:
                if m in ONNX_FAILED:
                    print(f"{m:<19} {'':>5} {'gradcam (ONNX import)':<21} import failed: {ONNX_FAILED[m]}")
                    continue
                for b in (1, 8):
                    f, nf = get(imported, m, b, "forward"), get(mine, m, b, "forward")
                    g, ng = get(imported, m, b, "gradcam"), get(mine, m, b, "gradcam")
                    if None in (f, nf, g, ng): continue
                    print(f"{m:<19} {b:>5} {'gradcam (ONNX import)':<21} {f:>10.1f} {nf:>7.1f} {f / nf:>5.2f}x "
                          f"{g:>11.1f} {ng:>7.1f} {g / ng:>5.2f}x")
        print("targets: gradcam's Grad-CAM >= 3x pytorch-grad-cam's and <= 1.5x onnxruntime's forward")
        for m in names:
            for b in (1, 8):
                ref, me, o = get(peer, m, b, "gradcam"), get(mine, m, b, "gradcam"), get(peer, m, b, "onnxruntime forward")
                if None in (ref, me, o): continue
                ok = lambda c: "met" if c else "MISSED"
                print(f"  {m:<19} batch {b}: {ref / me:5.2f}x pytorch-grad-cam ({ok(ref / me >= 3)}), "
                      f"{me / o:5.2f}x onnxruntime forward ({ok(me / o <= 1.5)})")
        if onnx:
            print("targets: gradcam on an imported ONNX model <= 1.10x its native model, forward and Grad-CAM")
            for m in onnx:
                for b in (1, 8):
                    f, nf = get(imported, m, b, "forward"), get(mine, m, b, "forward")
                    g, ng = get(imported, m, b, "gradcam"), get(mine, m, b, "gradcam")
                    ok = lambda c: "met" if c else "MISSED"
                    if m in ONNX_FAILED or None in (f, nf, g, ng):
                        print(f"  {m:<19} batch {b}: ONNX import not timed (MISSED)")
                        continue
                    print(f"  {m:<19} batch {b}: forward {f / nf:5.2f}x native ({ok(f / nf <= 1.10)}), "
                          f"Grad-CAM {g / ng:5.2f}x native ({ok(g / ng <= 1.10)})")
        fma_peak = FMA_PEAK.get(isa)
        if fma_peak:
            print(f"multiply-add peak with {ISA_NAME.get(isa)} vectors (gradcam bench's probe, all threads): {fma_peak:.0f} GFLOP/s")
            for m in names:
                g = GFLOP.get(m)
                if not g: continue
                rate = lambda ms: f"{g / ms * 1e3:.0f} GFLOP/s ({100 * g / ms * 1e3 / fma_peak:.0f}%)"
                sides = [("gradcam", get(mine, m, 1, "forward")), ("onnxruntime", get(peer, m, 1, "onnxruntime forward")),
                         ("torch", get(peer, m, 1, "torch forward"))]
                print(f"{m}, batch 1 forward, {g:.2f} GFLOP of convolutions: " + ", ".join(f"{n} {rate(ms)}" for n, ms in sides if ms))
                sc = get(peer, m, 1, "scorecam")
                if sc:
                    ms = sc / 3 / CHANNELS[m]
                    print(f"  ScoreCAM 3x the reference needs a forward in {ms:.1f} ms: {g / ms * 1e3:.0f} GFLOP/s ({100 * g / ms * 1e3 / fma_peak:.0f}% of the peak)")
    print(f"gradcam bench peak resident memory: {peak / 1e6:.0f} MB")
    if onnx_peak:
        print(f"gradcam bench peak resident memory, ONNX import: {onnx_peak / 1e6:.0f} MB")
    if "resnet50" in names:
        print(f"gradcam explain, one image, resnet50, peak resident memory: {explain_peak(a.gradcam) / 1e6:.0f} MB")

main()
