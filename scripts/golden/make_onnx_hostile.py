"""Hostile ONNX files for the importer's tests: tests/golden/onnx/hostile/ (crates/gradcam/tests/onnx_hostile.rs).

Each file is a tiny valid classifier (input x: 1x3x16x16 -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm
-> logits 1x5) with one thing made wrong: graph order, names, shapes, attributes, external data, protobuf framing.
None is checked with onnx.checker (most would fail it). Every one must be refused with an error naming the file
and the problem, without a panic, a hang or a large allocation.

    /work/venv-ref/bin/python scripts/golden/make_onnx_hostile.py [--out tests/golden/onnx/hostile]

Running it twice gives the same bytes.
"""
import argparse, os, shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
U64_MAX = "18446744073709551615"


def arr(name, shape, dtype=np.float32):
    n = int(np.prod(shape))
    return numpy_helper.from_array(np.linspace(-1, 1, n).astype(dtype).reshape(shape), name)


def ints(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def raw(name, dims, data_type=TensorProto.FLOAT, data=b""):
    """A tensor with any dims (negative, huge) and whatever raw bytes."""
    t = TensorProto()
    t.name = name
    t.data_type = data_type
    t.dims.extend(dims)
    t.raw_data = data
    return t


def external(name, dims, location, offset=None, length=None, data_type=TensorProto.FLOAT):
    t = TensorProto()
    t.name = name
    t.data_type = data_type
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", offset), ("length", length)):
        if v is not None:
            e = t.external_data.add()
            e.key, e.value = k, str(v)
    return t


def base_nodes():
    return [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
            helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
            helper.make_node("Gemm", ["f", "F"], ["logits"], name="fc", transB=1)]


def base_inits():
    return [arr("W", (4, 3, 3, 3)), arr("F", (5, 4))]


def model(nodes=None, inits=None, opset=17, ir=8, input_shape=(1, 3, 16, 16), input_type=TensorProto.FLOAT,
          output="logits", output_shape=(1, 5)):
    nodes = base_nodes() if nodes is None else nodes
    inits = base_inits() if inits is None else inits
    g = helper.make_graph(nodes, "hostile", [helper.make_tensor_value_info("x", input_type, list(input_shape))],
                          [helper.make_tensor_value_info(output, TensorProto.FLOAT, list(output_shape))], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="make_onnx_hostile.py")
    m.ir_version = ir
    return m


def with_node(k, node, extra_inits=()):
    """The base model with `node` inserted at position k."""
    nodes = base_nodes()
    nodes.insert(k, node)
    return model(nodes, base_inits() + list(extra_inits))


def replace(k, node, extra_inits=(), inits=None):
    nodes = base_nodes()
    nodes[k] = node
    return model(nodes, (base_inits() if inits is None else inits) + list(extra_inits))


def folded(op, inputs, extra_inits, **attrs):
    """An input-independent node (folded at import) in front of the base model; its output is read by nothing."""
    return with_node(0, helper.make_node(op, inputs, ["junk"], name="hostile", **attrs), extra_inits)


def after_flatten(op, inputs, extra_inits=(), out_shape=None, **attrs):
    """A node on the image's values (lowered) between Flatten and Gemm: it reads `f` (1, 4), writes `f2`."""
    nodes = base_nodes()
    nodes.insert(4, helper.make_node(op, inputs, ["f2"], name="hostile", **attrs))
    nodes[5] = helper.make_node("Gemm", ["f2", "F"], ["logits"], name="fc", transB=1)
    return model(nodes, base_inits() + list(extra_inits))


def after_relu(op, inputs, extra_inits=(), **attrs):
    """A node on the image's feature map (lowered) between Relu and the pooling: reads `r` (1, 4, 16, 16)."""
    nodes = base_nodes()
    nodes.insert(2, helper.make_node(op, inputs, ["r2"], name="hostile", **attrs))
    nodes[3] = helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap")
    return model(nodes, base_inits() + list(extra_inits))


def conv_with(w, **attrs):
    a = dict(kernel_shape=list(w.dims[2:]))
    a.update(attrs)
    nodes = base_nodes()
    nodes[0] = helper.make_node("Conv", ["x", "W"], ["c"], name="conv", **a)
    return model(nodes, [w, arr("F", (5, w.dims[0] if w.dims[0] > 0 else 4))])


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, payload):
    """A length-delimited protobuf field."""
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def deep_nesting(depth=1500):
    """ModelProto.graph.node[0].attribute[0].g.node[0].attribute[0].g… `depth` levels (protobuf recursion)."""
    inner = b""
    for _ in range(depth):
        attr = field(1, b"g") + varint(20 << 3) + varint(5) + field(6, inner)  # name, type GRAPH, g
        node = field(4, b"If") + field(5, attr)  # op_type, attribute
        inner = field(1, node)  # GraphProto.node
    return varint(1 << 3) + varint(8) + field(7, inner)  # ir_version 8, graph


def claims_2gb():
    """A ModelProto whose graph field claims 2 GiB and holds a few bytes."""
    return varint(1 << 3) + varint(8) + varint(7 << 3 | 2) + varint(2**31) + b"\x0a\x00"


def constant_no_value():
    return with_node(0, helper.make_node("Constant", [], ["k"], name="hostile"))


def wrong_attr_type(name, value_attr):
    nodes = base_nodes()
    n = nodes[0]
    del n.attribute[:]
    n.attribute.extend([helper.make_attribute("kernel_shape", [3, 3]), value_attr])
    return model(nodes)


def build():
    F = TensorProto.FLOAT
    cases = {}
    # --- graph structure
    n = base_nodes()
    cases["order_later"] = model([n[1], n[0]] + n[2:])
    n = base_nodes()
    n[1] = helper.make_node("Relu", ["ghost"], ["r"], name="relu")
    cases["order_nothing"] = model(n)
    n = base_nodes()
    n[1:2] = [helper.make_node("Relu", ["b"], ["a"], name="relu_a"), helper.make_node("Relu", ["a"], ["b"], name="relu_b"),
              helper.make_node("Add", ["b", "c"], ["r"], name="add")]
    cases["cycle"] = model(n)
    n = base_nodes()
    n[1] = helper.make_node("Relu", ["c"], ["c"], name="relu")
    n[2] = helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap")
    cases["duplicate_output"] = model(n)
    n = base_nodes()
    n.insert(2, helper.make_node("Relu", ["c"], ["f"], name="relu_twice"))
    cases["duplicate_output_later"] = model(n)
    n = base_nodes()
    n[1] = helper.make_node("Relu", ["c"], ["x"], name="relu")
    n[2] = helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap")
    cases["writes_the_input"] = model(n)
    n = base_nodes()
    n[1] = helper.make_node("Relu", ["c"], ["W"], name="relu")
    n[2] = helper.make_node("GlobalAveragePool", ["W"], ["g"], name="gap")
    cases["writes_an_initializer"] = model(n)
    cases["empty_graph"] = model([], [])
    cases["output_is_input"] = model(output="x", output_shape=(1, 3, 16, 16))
    cases["output_constant"] = model(base_nodes() + [helper.make_node("Constant", [], ["k"], name="k",
                                                                       value=arr("kv", (1, 5)))], output="k")
    n = base_nodes()
    n[4] = helper.make_node("Reshape", ["f", "s3"], ["logits"], name="reshape")
    cases["output_rank3"] = model(n, base_inits() + [ints("s3", [1, 2, 2])], output_shape=(1, 2, 2))
    cases["input_rank3"] = model(input_shape=(3, 16, 16))
    cases["input_one_channel"] = model(input_shape=(1, 1, 16, 16))
    cases["input_int64"] = model(input_type=TensorProto.INT64)
    cases["input_string"] = model(input_type=TensorProto.STRING)
    cases["opset1"] = model(opset=1)
    cases["opset99"] = model(opset=99)
    cases["ir_version0"] = model(ir=0)
    # --- tensors
    cases["init_negative_dim"] = model(inits=[raw("W", [4, -3, 3, 3], data=b"\0" * 16), arr("F", (5, 4))])
    cases["init_1e12_elements"] = model(inits=[raw("W", [10**6, 10**6], data=b"\0" * 16), arr("F", (5, 4))])
    cases["init_overflowing_dims"] = model(inits=[raw("W", [2**62, 2**62], data=b"\0" * 16), arr("F", (5, 4))])
    # 2^62 floats: 2^64 bytes, 0 when the byte count wraps; the data file is empty
    cases["init_wrapping_bytes"] = model(inits=[external("W", [2**62], "empty.bin", 0, 0), arr("F", (5, 4))])
    cases["ext_absolute"] = model(inits=[external("W", [4, 3, 3, 3], "/dev/zero", 0, 432), arr("F", (5, 4))])
    cases["ext_dotdot"] = model(inits=[external("W", [4, 3, 3, 3], "../hostile/w.bin", 0, 432), arr("F", (5, 4))])
    cases["ext_offset_past_end"] = model(inits=[external("W", [4, 3, 3, 3], "w.bin", 4096, 432), arr("F", (5, 4))])
    cases["ext_length_u64_max"] = model(inits=[external("W", [4, 3, 3, 3], "w.bin", 8, U64_MAX), arr("F", (5, 4))])
    cases["ext_offset_u64_max"] = model(inits=[external("W", [4, 3, 3, 3], "w.bin", U64_MAX, 432), arr("F", (5, 4))])
    cases["ext_offset_negative"] = model(inits=[external("W", [4, 3, 3, 3], "w.bin", -8, 432), arr("F", (5, 4))])
    cases["ext_folder"] = model(inits=[external("W", [4, 3, 3, 3], ".", 0, 432), arr("F", (5, 4))])
    # the test makes `fifo` a named pipe beside a copy of this file: opening it for reading would wait for a writer
    cases["ext_fifo"] = model(inits=[external("W", [4, 3, 3, 3], "fifo", 0, 432), arr("F", (5, 4))])
    cases["ext_short_data"] = model(inits=[external("W", [5, 3, 3, 3], "w.bin", 0), arr("F", (5, 4))])
    # --- constants folded at import
    cases["reshape_huge"] = after_flatten("Reshape", ["f", "s"], [ints("s", [1, 10**12])])
    cases["reshape_overflow"] = folded("Reshape", ["v", "s"], [arr("v", (4,)), ints("s", [2**32, 2**32, -1])])
    cases["reshape_lowered_overflow"] = after_flatten("Reshape", ["f", "s"], [ints("s", [2**32, 2**32, 2**32, -1])])
    cases["expand_huge"] = folded("Expand", ["v", "s"], [arr("v", (1,)), ints("s", [10**6, 10**6])])
    cases["expand_lowered_huge"] = after_flatten("Expand", ["f", "s"], [ints("s", [10**6, 10**6, 4])])
    cases["constantofshape_huge"] = folded("ConstantOfShape", ["s"], [ints("s", [10**6, 10**6])])
    cases["constantofshape_overflow"] = folded("ConstantOfShape", ["s"], [ints("s", [2**40, 2**40, 0])])
    cases["tile_huge"] = folded("Tile", ["v", "s"], [arr("v", (2,)), ints("s", [10**12])])
    cases["tile_wrapping"] = folded("Tile", ["v", "s"], [arr("v", (4,)), ints("s", [2**62])])
    cases["tile_empty_many"] = folded("Tile", ["v", "s"], [arr("v", (0,)), ints("s", [2**62])])
    cases["range_huge"] = folded("Range", ["a", "b", "d"], [ints("a", 0), ints("b", 10**12), ints("d", 1)])
    cases["range_empty_start"] = folded("Range", ["a", "b", "d"], [ints("a", []), ints("b", 10), ints("d", 1)])
    cases["pad_huge"] = after_relu("Pad", ["r", "p"], [ints("p", [0, 0, 10**9, 10**9, 0, 0, 10**9, 10**9])])
    cases["slice_step0"] = folded("Slice", ["v", "s", "e", "a", "st"],
                                  [arr("v", (10,)), ints("s", [0]), ints("e", [10]), ints("a", [0]), ints("st", [0])])
    cases["slice_i64_extremes"] = folded("Slice", ["v", "s", "e", "a", "st"],
                                         [arr("v", (10,)), ints("s", [1]), ints("e", [I64_MAX]), ints("a", [0]),
                                          ints("st", [I64_MAX])])
    cases["slice_i64_min_step"] = folded("Slice", ["v", "s", "e", "a", "st"],
                                         [arr("v", (10,)), ints("s", [I64_MAX]), ints("e", [I64_MIN]),
                                          ints("a", [0]), ints("st", [I64_MIN])])
    cases["slice_short_axes"] = folded("Slice", ["v", "s", "e", "a"],
                                       [arr("v", (2, 5)), ints("s", [0, 0]), ints("e", [1, 1]), ints("a", [0])])
    cases["slice_short_ends"] = folded("Slice", ["v", "s", "e"], [arr("v", (2, 5)), ints("s", [0, 0]), ints("e", [1])])
    cases["slice_lowered_step0"] = after_relu("Slice", ["r", "s", "e", "a", "st"],
                                              [ints("s", [0]), ints("e", [8]), ints("a", [2]), ints("st", [0])])
    cases["slice_lowered_negative_step"] = after_relu("Slice", ["r", "s", "e", "a", "st"],
                                                      [ints("s", [8]), ints("e", [0]), ints("a", [2]),
                                                       ints("st", [-1])])
    cases["slice_lowered_extremes"] = after_relu("Slice", ["r", "s", "e", "a", "st"],
                                                 [ints("s", [I64_MIN]), ints("e", [I64_MAX]), ints("a", [2]),
                                                  ints("st", [I64_MAX])])
    cases["slice_lowered_short_axes"] = after_relu("Slice", ["r", "s", "e", "a"],
                                                   [ints("s", [0, 0]), ints("e", [8, 8]), ints("a", [2])])
    cases["gather_out_of_range"] = after_flatten("Gather", ["f", "i"], [ints("i", [0, 99])], axis=1)
    cases["gather_i64_min"] = after_flatten("Gather", ["f", "i"], [ints("i", [I64_MIN])], axis=1)
    cases["gather_scalar"] = folded("Gather", ["v", "i"], [arr("v", ()), ints("i", 0)])
    cases["concat_mismatch"] = folded("Concat", ["a", "b"], [arr("a", (2, 3)), arr("b", (3, 2))], axis=0)
    cases["concat_scalars"] = folded("Concat", ["a", "b"], [arr("a", ()), arr("b", ())], axis=0)
    cases["concat_lowered_mismatch"] = after_flatten("Concat", ["f", "k"], [arr("k", (2, 3))], axis=1)
    cases["concat_lowered_rank"] = after_flatten("Concat", ["f", "k"], [arr("k", (1, 2, 2))], axis=1)
    # --- convolution and pooling
    cases["conv_channels"] = conv_with(arr("W", (4, 2, 3, 3)), pads=[1, 1, 1, 1])
    cases["conv_zero_kernel"] = conv_with(raw("W", [4, 3, 0, 0]))
    cases["conv_zero_kernel_dilated"] = conv_with(raw("W", [4, 3, 0, 0]), dilations=[2, 2])
    cases["conv_zero_out_channels"] = conv_with(raw("W", [0, 3, 3, 3]))
    cases["conv_group0"] = conv_with(arr("W", (4, 3, 3, 3)), group=0)
    cases["conv_group_negative"] = conv_with(arr("W", (4, 3, 3, 3)), group=-3)
    cases["conv_stride0"] = conv_with(arr("W", (4, 3, 3, 3)), strides=[0, 0])
    cases["conv_pads_huge"] = conv_with(arr("W", (4, 3, 3, 3)), pads=[10**9] * 4)
    cases["conv_pads_i64_max"] = conv_with(arr("W", (4, 3, 3, 3)), pads=[I64_MAX] * 4)
    cases["conv_kernel_larger"] = conv_with(arr("W", (1, 3, 17, 17)))
    cases["conv_dilation_huge"] = conv_with(arr("W", (4, 3, 3, 3)), dilations=[2**40, 2**40])
    cases["conv_bias_short"] = replace(0, helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv",
                                                           kernel_shape=[3, 3]), [arr("B", (3,))])
    cases["maxpool_kernel_larger"] = after_relu("MaxPool", ["r"], kernel_shape=[32, 32])
    cases["maxpool_stride0"] = after_relu("MaxPool", ["r"], kernel_shape=[2, 2], strides=[0, 0])
    cases["maxpool_pads_huge"] = after_relu("MaxPool", ["r"], kernel_shape=[2, 2], pads=[10**9] * 4)
    cases["avgpool_kernel_huge"] = after_relu("AveragePool", ["r"], kernel_shape=[I64_MAX, I64_MAX])
    # --- axes, permutations, splits
    cases["softmax_axis"] = after_flatten("Softmax", ["f"], axis=5)
    cases["softmax_axis_i64_min"] = after_flatten("Softmax", ["f"], axis=I64_MIN)
    cases["transpose_axis"] = after_relu("Transpose", ["r"], perm=[0, 1, 2, 9])
    cases["transpose_repeat"] = after_relu("Transpose", ["r"], perm=[0, 1, 1, 3])
    cases["transpose_short_perm"] = after_relu("Transpose", ["r"], perm=[1, 0])
    cases["transpose_fold_repeat"] = folded("Transpose", ["v"], [arr("v", (2, 3))], perm=[0, 0])
    cases["transpose_fold_short"] = folded("Transpose", ["v"], [arr("v", (2, 3))], perm=[1])
    n = base_nodes()
    n[2:3] = [helper.make_node("Split", ["r", "sp"], ["r2", "r_rest"], name="split", axis=1),
              helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap")]
    cases["split_sum"] = model(n, base_inits() + [ints("sp", [1, 1])])
    cases["split_fold_sum"] = with_node(0, helper.make_node("Split", ["v", "sp"], ["p", "q"], name="hostile"),
                                        [arr("v", (4,)), ints("sp", [3, 3])])
    cases["split_negative"] = with_node(0, helper.make_node("Split", ["v", "sp"], ["p", "q"], name="hostile"),
                                        [arr("v", (4,)), ints("sp", [6, -2])])
    cases["split_num_outputs_huge"] = with_node(0, helper.make_node("Split", ["v"], ["p", "q"], name="hostile",
                                                                    num_outputs=2**62), [arr("v", (4,))], )
    cases["shape_start_i64_min"] = with_node(1, helper.make_node("Shape", ["c"], ["sh"], name="hostile",
                                                                 start=I64_MIN, end=I64_MAX))
    cases["tile_short_repeats"] = folded("Tile", ["v", "s"], [arr("v", (2, 2)), ints("s", [2, 2, 2])])
    cases["expand_empty_huge"] = folded("Expand", ["v", "s"], [arr("v", (1,)), ints("s", [0, 2**62])])
    cases["unsqueeze_axis_huge"] = after_flatten("Unsqueeze", ["f", "a"], [ints("a", [I64_MAX])])
    cases["reduce_dup_axes"] = folded("ReduceSum", ["v", "a"], [arr("v", (2, 3)), ints("a", [0, 0])])
    cases["reduce_lowered_dup_axes"] = after_relu("ReduceMean", ["r", "a"], [ints("a", [1, 1])], keepdims=1)
    # --- attributes and constants
    cases["attr_perm_as_int"] = after_relu("Transpose", ["r"], perm=1)
    cases["attr_strides_as_floats"] = wrong_attr_type("strides", helper.make_attribute("strides", [1.0, 1.0]))
    cases["attr_group_as_string"] = wrong_attr_type("group", helper.make_attribute("group", "one"))
    cases["attr_axis_as_tensor"] = after_flatten("Softmax", ["f"], axis=ints("ax", [1]))
    cases["constant_no_value"] = constant_no_value()
    cases["constant_string"] = with_node(0, helper.make_node("Constant", [], ["k"], name="hostile",
                                                             value=helper.make_tensor("s", TensorProto.STRING, [1],
                                                                                      [b"a"])))
    cases["cast_to_string"] = folded("Cast", ["v"], [arr("v", (2,))], to=TensorProto.STRING)
    cases["cast_to_unknown"] = folded("Cast", ["v"], [arr("v", (2,))], to=99)
    cases["cast_image_to_string"] = after_flatten("Cast", ["f"], to=TensorProto.STRING)
    # --- linear algebra and normalisation
    cases["matmul_rank1"] = after_flatten("MatMul", ["f", "m"], [arr("m", (4,))])
    cases["matmul_rank1_left"] = after_flatten("MatMul", ["m", "f"], [arr("m", (1,))])
    cases["matmul_fold_rank1"] = folded("MatMul", ["a", "b"], [arr("a", (3,)), arr("b", (3,))])
    cases["matmul_mismatch"] = after_flatten("MatMul", ["f", "m"], [arr("m", (3, 4))])
    cases["gemm_weight_mismatch"] = replace(4, helper.make_node("Gemm", ["f", "F"], ["logits"], name="fc", transB=1),
                                            inits=[arr("W", (4, 3, 3, 3)), arr("F", (5, 3))])
    cases["gemm_weight_rank1"] = replace(4, helper.make_node("Gemm", ["f", "F"], ["logits"], name="fc"),
                                         inits=[arr("W", (4, 3, 3, 3)), arr("F", (4,))])
    cases["layernorm_weight_length"] = after_flatten("LayerNormalization", ["f", "ln_scale"], [arr("ln_scale", (3,))])
    cases["batchnorm_lengths"] = after_relu("BatchNormalization", ["r", "s", "b", "m", "v"],
                                            [arr("s", (4,)), arr("b", (3,)), arr("m", (4,)), arr("v", (4,))])
    cases["batchnorm_channels"] = after_relu("BatchNormalization", ["r", "s", "b", "m", "v"],
                                             [arr("s", (2,)), arr("b", (2,)), arr("m", (2,)), arr("v", (2,))])
    cases["batchnorm_2d_lengths"] = after_flatten("BatchNormalization", ["f", "s", "b", "m", "v"],
                                                  [arr("s", (4,)), arr("b", (1,)), arr("m", (4,)), arr("v", (4,))])
    cases["scatternd_short_updates"] = folded("ScatterND", ["v", "i", "u"],
                                              [arr("v", (4, 3)), ints("i", [[0], [1]]), arr("u", (1, 3))])
    cases["scatternd_deep_indices"] = folded("ScatterND", ["v", "i", "u"],
                                             [arr("v", (4,)), ints("i", [[0, 0, 0]]), arr("u", (1,))])
    cases["trilu_empty_k"] = folded("Trilu", ["v", "k"], [arr("v", (3, 3)), ints("k", [])])
    cases["where_empty_condition"] = folded("Where", ["cond", "a", "b"],
                                            [numpy_helper.from_array(np.zeros((0,), bool), "cond"), arr("a", (2,)),
                                             arr("b", (2,))])
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "golden", "onnx", "hostile"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for name, m in sorted(build().items()):
        with open(os.path.join(out, name + ".onnx"), "wb") as f:
            f.write(m.SerializeToString())
    for name, data in (("deep_nesting", deep_nesting()), ("claims_2gb", claims_2gb())):
        with open(os.path.join(out, name + ".onnx"), "wb") as f:
            f.write(data)
    # external data: 432 bytes of weights, and an empty file
    with open(os.path.join(out, "w.bin"), "wb") as f:
        f.write(numpy_helper.to_array(arr("W", (4, 3, 3, 3))).tobytes())
    open(os.path.join(out, "empty.bin"), "wb").close()
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{len(os.listdir(out))} files, {total} bytes in {out}")


if __name__ == "__main__":
    main()
