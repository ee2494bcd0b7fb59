"""Importers: model files -> NetworkDefinition (ONNX, Caffe, TensorFlow via tf2onnx)."""
