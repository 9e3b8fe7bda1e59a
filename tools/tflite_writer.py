"""A small TFLite flatbuffer writer: numpy arrays and a list of ops in, ``.tflite`` bytes out.

No TensorFlow: the object API of the TFLite schema (``schema_py_generated``, shipped inside
``ai-edge-litert``) packs the model with the ``flatbuffers`` package. Constant buffers are 16-byte
aligned as the converter writes them, so XNNPACK can use them in place. Enough of the schema for
dense, convolutional and reduction models, float32 or int8.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as S

_TYPES = {np.dtype(np.float32): S.TensorType.FLOAT32, np.dtype(np.int32): S.TensorType.INT32,
          np.dtype(np.int8): S.TensorType.INT8}  # fmt: skip


class _AlignedBuffer(S.BufferT):  # type: ignore[misc]
    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 (schema API name)
        data = None
        if self.data is not None:
            raw = bytes(self.data)
            builder.StartVector(1, len(raw), 16)
            builder.head = builder.head - len(raw)
            builder.Bytes[builder.head : builder.head + len(raw)] = raw
            data = builder.EndVector()
        S.BufferStart(builder)
        if data is not None:
            S.BufferAddData(builder, data)
        return S.BufferEnd(builder)


@dataclass
class Quant:
    """Affine quantisation: per tensor (one scale) or per channel along ``axis``."""

    scale: list[float]
    zero_point: list[int]
    axis: int = 0


@dataclass
class Graph:
    """Tensors, ops and constant buffers of one subgraph, built in order."""

    tensors: list[Any] = field(default_factory=list)
    buffers: list[Any] = field(default_factory=lambda: [_AlignedBuffer()])  # 0: the empty buffer
    ops: list[Any] = field(default_factory=list)
    opcodes: dict[int, int] = field(default_factory=dict)

    def tensor(self, name: str, shape: list[int], dtype: Any, quant: Quant | None = None,
               data: np.ndarray | None = None, signature: list[int] | None = None) -> int:  # fmt: skip
        t = S.TensorT()
        t.name = name
        t.shape = list(shape)
        t.type = _TYPES[np.dtype(dtype)]
        if signature is not None:
            t.shapeSignature = list(signature)
        if data is not None:
            arr = np.ascontiguousarray(data, dtype=dtype).reshape(shape)
            buf = _AlignedBuffer()
            buf.data = arr.tobytes()
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if quant is not None:
            q = S.QuantizationParametersT()
            q.scale = [float(s) for s in quant.scale]
            q.zeroPoint = [int(z) for z in quant.zero_point]
            q.quantizedDimension = quant.axis
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, code: int, inputs: list[int], outputs: list[int], options_type: int = 0,
           options: Any = None) -> None:  # fmt: skip
        if code not in self.opcodes:
            self.opcodes[code] = len(self.opcodes)
        o = S.OperatorT()
        o.opcodeIndex = self.opcodes[code]
        o.inputs, o.outputs = list(inputs), list(outputs)
        if options is not None:
            o.builtinOptionsType, o.builtinOptions = options_type, options
        self.ops.append(o)

    def model(self, inputs: list[int], outputs: list[int], description: str) -> bytes:
        sg = S.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs, sg.operators = self.tensors, inputs, outputs, self.ops
        sg.name = "main"
        m = S.ModelT()
        m.version = 3
        m.description = description
        codes = []
        for code in sorted(self.opcodes, key=self.opcodes.__getitem__):
            c = S.OperatorCodeT()
            c.builtinCode = code
            c.deprecatedBuiltinCode = min(code, 127)
            c.version = 1
            codes.append(c)
        m.operatorCodes, m.subgraphs, m.buffers = codes, [sg], self.buffers
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def fc_options(relu: bool) -> tuple[int, Any]:
    o = S.FullyConnectedOptionsT()
    o.fusedActivationFunction = S.ActivationFunctionType.RELU if relu else 0
    return S.BuiltinOptions.FullyConnectedOptions, o


def conv_options(relu: bool) -> tuple[int, Any]:
    o = S.Conv2DOptionsT()
    o.padding = S.Padding.VALID
    o.strideW = o.strideH = o.dilationWFactor = o.dilationHFactor = 1
    o.fusedActivationFunction = S.ActivationFunctionType.RELU if relu else 0
    return S.BuiltinOptions.Conv2DOptions, o


def mean_options() -> tuple[int, Any]:
    o = S.ReducerOptionsT()
    o.keepDims = False
    return S.BuiltinOptions.ReducerOptions, o


def softmax_options() -> tuple[int, Any]:
    o = S.SoftmaxOptionsT()
    o.beta = 1.0
    return S.BuiltinOptions.SoftmaxOptions, o


def reshape_options(shape: list[int]) -> tuple[int, Any]:
    o = S.ReshapeOptionsT()
    o.newShape = list(shape)
    return S.BuiltinOptions.ReshapeOptions, o


OP = S.BuiltinOperator
