"""ONNX goldens: small torchvision-architecture classifiers (num_classes=10, refmodels' synthetic weights on every
parameter and buffer by name, eval mode) exported with the TorchScript and the dynamo exporters, with PyTorch's
logits and pytorch-grad-cam 1.5.7's final maps. Regenerates tests/golden/onnx/ exactly (see its README.md):

    /work/venv-ref/bin/python scripts/golden/make_onnx_goldens.py [--out tests/golden/onnx]
        [--image ~/.cache/gradcam/examples/chelsea.png] [--models resnet,vit,...] [--no-special]

needs: torch, torchvision, grad-cam==1.5.7, onnx, onnxruntime, onnxscript (and the example photos:
scripts/fetch-assets.sh). Case directory format: onnxcases.py / tests/golden/onnx/README.md.
"""
import argparse, importlib, json, os, sys
from functools import partial
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refmodels as R  # noqa: E402
import onnxcases as OC  # noqa: E402

tvm = lambda name: importlib.import_module(f"torchvision.models.{name}")  # noqa: E731  (modules, not the builders)


# ----------------------------------------------------------------------------------------------- models
class SmallResNet(tvm("resnet").ResNet):
    """torchvision ResNet with narrow stages (the constructor fixes 64..512): the same forward, _make_layer and
    module names (conv1, bn1, relu, maxpool, layer1..layer4, avgpool, fc)."""
    def __init__(self, block, layers, widths, num_classes=10):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = widths[0], 1, 1, 64
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)


class SmallSqueezeNet(nn.Module):
    """SqueezeNet 1.1's layout (features / classifier, torchvision's Fire, MaxPool2d(3, 2, ceil_mode=True),
    a 1x1 conv + ReLU classifier) with narrow Fire modules; the stem conv has padding 1 so that ceil_mode
    matters at every pool (32 -> 16 -> 8 -> 4 at 64x64 input)."""
    def __init__(self, num_classes=10):
        super().__init__()
        Fire = tvm("squeezenet").Fire
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(16, 4, 8, 8), Fire(16, 4, 8, 8),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(16, 8, 16, 16), Fire(32, 8, 16, 16),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(32, 8, 24, 24), Fire(48, 8, 24, 24), Fire(48, 8, 24, 24), Fire(48, 8, 24, 24))
        self.classifier = nn.Sequential(nn.Dropout(p=0.5), nn.Conv2d(48, num_classes, kernel_size=1),
                                        nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class SmallGoogLeNet(nn.Module):
    """GoogLeNet's layout from torchvision's Inception and BasicConv2d (module names as torchvision: conv1,
    maxpool1, conv2, conv3, maxpool2, inception3a, maxpool3, inception4a, avgpool, dropout, fc), narrow;
    MaxPool2d(3, 2, ceil_mode=True) as torchvision (32 -> 16 -> 8 -> 4 at 64x64)."""
    def __init__(self, num_classes=10):
        super().__init__()
        G = tvm("googlenet")
        self.conv1 = G.BasicConv2d(3, 16, kernel_size=3, stride=2, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = G.BasicConv2d(16, 16, kernel_size=1)
        self.conv3 = G.BasicConv2d(16, 32, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = G.Inception(32, 8, 8, 16, 4, 8, 8)      # -> 40
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = G.Inception(40, 16, 12, 24, 4, 8, 16)   # -> 64
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=0.2)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3a(x))
        x = self.inception4a(x)
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


class TinyCNN(nn.Module):
    """For the special cases: conv-BN-ReLU x3 (one stride-2 max-pool), global average, linear. softmax: the
    forward ends in softmax(dim=1); channels_last: the forward takes (N, H, W, 3) and permutes to NCHW first."""
    def __init__(self, num_classes=10, softmax=False, channels_last=False):
        super().__init__()
        self.softmax, self.channels_last = softmax, channels_last
        def cbr(i, o, s):
            return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))
        self.features = nn.Sequential(cbr(3, 8, 2), nn.MaxPool2d(2), cbr(8, 16, 2), cbr(16, 24, 2))
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x):
        if self.channels_last:  # contiguous: the same NCHW memory layout (and sums) as an NCHW input
            x = x.permute(0, 3, 1, 2).contiguous()
        x = self.fc(self.features(x).mean((2, 3)))
        return F.softmax(x, dim=1) if self.softmax else x


def mobilenet_v3():
    mv = tvm("mobilenetv3")
    C = partial(mv.InvertedResidualConfig, width_mult=0.5)  # channels halved (min 8)
    setting = [C(16, 3, 16, 16, True, "RE", 2, 1), C(16, 3, 48, 24, False, "RE", 2, 1),
               C(24, 3, 64, 24, False, "RE", 1, 1), C(24, 5, 72, 32, True, "HS", 2, 1),
               C(32, 5, 96, 32, True, "HS", 1, 1)]
    return mv.MobileNetV3(setting, last_channel=32, num_classes=10)


def efficientnet():
    E = tvm("efficientnet")
    C = partial(E.MBConvConfig, width_mult=0.25, depth_mult=0.5)  # B0-like table, channels / 4, depths / 2
    setting = [C(1, 3, 1, 32, 16, 1), C(4, 3, 2, 16, 24, 2), C(4, 5, 2, 24, 40, 2), C(4, 3, 1, 40, 48, 3),
               C(4, 5, 2, 48, 64, 1)]
    # last_channel 128 (not 4 x 64): with 256 the default layer's maps for the second class are all zero
    return E.EfficientNet(setting, dropout=0.2, num_classes=10, last_channel=128)


def convnext():
    C = tvm("convnext")
    # half the widths of the brief's (16, 32, 64): the size budget of tests/golden/onnx
    return C.ConvNeXt([C.CNBlockConfig(8, 16, 1), C.CNBlockConfig(16, 32, 1), C.CNBlockConfig(32, None, 1)],
                      num_classes=10)


def regnet():
    G = tvm("regnet")
    bp = G.BlockParams.from_init_params(depth=4, w_0=8, w_a=8, w_m=2, group_width=8, se_ratio=0.25)
    return G.RegNet(bp, stem_width=8, num_classes=10)


def vit():
    return tvm("vision_transformer").VisionTransformer(image_size=64, patch_size=8, num_layers=2, num_heads=2,
                                                       hidden_dim=32, mlp_dim=64, num_classes=10)


def swin():
    return tvm("swin_transformer").SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                                                   window_size=[4, 4], num_classes=10)


# name -> (builder, input size, TorchScript opset, [(module path, reshape)] (the default first), model reshape)
MODELS = {
    "resnet": (lambda: SmallResNet(tvm("resnet").BasicBlock, [1, 1, 2, 1], [8, 8, 8, 16]), 64, 11,
               [("layer4", None), ("layer3.0", None)], None),                # last stage; a block's output
    "mobilenet_v3": (mobilenet_v3, 64, 14, [("features.6", None), ("features.4.block.2", None)], None),  # SE
    "densenet": (lambda: tvm("densenet").DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16,
                                                  bn_size=2, num_classes=10), 64, 13,
                 [("features.norm5", None), ("features.denseblock3.denselayer2.relu2", None)], None),
    "shufflenet": (lambda: tvm("shufflenetv2").ShuffleNetV2(stages_repeats=[2, 2, 2],
                                                            stages_out_channels=[8, 16, 32, 64, 128], num_classes=10),
                   64, 12, [("conv5", None), ("stage4.0.branch2.2", None)], None),  # a ReLU before a strided dw conv
    "squeezenet": (SmallSqueezeNet, 64, 11, [("features.12", None), ("features.7.squeeze_activation", None)], None),
    "googlenet": (SmallGoogLeNet, 64, 15, [("inception4a", None), ("inception3a.branch2", None)], None),
    "efficientnet": (efficientnet, 64, 16, [("features.6", None), ("features.3.0.block.2", None)], None),  # SE
    "convnext": (convnext, 64, 17, [("features.5", None), ("features.3.0.block.0", None)], None),  # depthwise conv
    "regnet": (regnet, 64, 15, [("trunk_output", None), ("trunk_output.block3.block3-1.f.se", None)], None),
    "vit": (vit, 64, 14, [("encoder.layers.encoder_layer_1.ln_1", "vit"),
                          ("encoder.layers.encoder_layer_0", "vit")], "vit"),
    "swin": (swin, 64, 17, [("features.3.1.norm1", "swin"), ("features.1.1", "swin")], "swin"),
}
# gradcam's default-layer rule (the last feature map of at least 2x2 before pooling; a numbered or direct child named
# rather than a bare top-level container) where it names another module than the first layer above (same tensor
# for regnet; squeezenet's last feature map is its classifier's ReLU, before the global pooling)
DEFAULT_LAYER = {"squeezenet": "classifier.2", "regnet": "trunk_output.block3"}
DYNAMO_RENAMED = "resnet"  # its model.onnx is renamed after export: the data file keeps the name resnet.onnx.data
VIT_GRID = (8, 8)


def build(name):
    m = OC.synthesize(MODELS[name][0]())
    return m


def save_input(out, image, size, written):
    x = R.load_input(image, OC.MEAN, OC.STD, size=size)
    f = f"input_{size}x{size}.npy"
    if f not in written:
        np.save(os.path.join(out, f), x.numpy())
        written[f] = x.numpy().copy()
    assert written[f].tobytes() == x.numpy().tobytes()
    return x, f


def run_model(name, out, image, written, report):
    builder, size, opset, layers, reshape = MODELS[name]
    model = build(name)
    x, input_rel = save_input(out, image, size, written)
    T = OC.Timer()
    ref = OC.reference(model, x, layers, grid=VIT_GRID if reshape == "vit" else None)
    t_ref = T.lap()
    for exporter in ("torchscript", "dynamo"):
        d = os.path.join(out, f"{name}_{'ts' if exporter == 'torchscript' else 'dynamo'}")
        OC.fresh_dir(d)
        onnx_path = os.path.join(d, "model.onnx")
        T.lap()
        if exporter == "torchscript":
            OC.export_ts(model, x, onnx_path, opset)
        elif name == DYNAMO_RENAMED:
            OC.export_dynamo(model, x, os.path.join(d, f"{name}.onnx"), rename_to=onnx_path)
        else:
            OC.export_dynamo(model, x, onnx_path)
        t_exp = T.lap()
        index, summ = OC.write_case(d, model_name=name, exporter=exporter, onnx_path=onnx_path, ref=ref,
                                    layers=layers, input_rel=input_rel, x_feed=x.numpy(), input_size=(size, size),
                                    reshape=reshape, default_layer=DEFAULT_LAYER.get(name))
        report.append({"case": os.path.basename(d), "opset": index["opset"], "bytes": OC.dir_size(d),
                       "onnx_bytes": sum(os.path.getsize(os.path.join(d, f))
                                         for f in ["model.onnx"] + summ["external_data"]),
                       "ops": summ["ops"], "external_data": summ["external_data"], "functions": summ["functions"],
                       "diff": index["onnx_vs_torch_max_abs_logit_diff"], "max_abs_logit": index["max_abs_logit"],
                       "classes": index["classes"],
                       "layers": {l["path"]: {"shape": l["shape"], "onnx_values": l["onnx_values"],
                                              "mutated": l["output_mutated_in_place"]} for l in index["layers"]},
                       "t_reference_s": t_ref, "t_export_s": t_exp, "t_case_s": T.lap()})
        print(json.dumps(report[-1]), flush=True)


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--out", default=os.path.join(root, "tests/golden/onnx"))
    ap.add_argument("--image", default=os.path.expanduser("~/.cache/gradcam/examples/chelsea.png"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--no-special", action="store_true")
    ap.add_argument("--report", default=None, help="write the per-case summary (ops, sizes, timings) here")
    a = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(a.out, exist_ok=True)
    written, report = {}, []
    for name in a.models.split(","):
        if name:
            run_model(name, a.out, a.image, written, report)
    if not a.no_special:
        import make_onnx_special
        report += make_onnx_special.make_all(a.out, a.image, written)
    if a.report:
        with open(a.report, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
