"""Importers: model files -> NetworkDefinition: ONNX (onnx/), Caffe (caffe/), TFLite flatbuffers natively (tflite/),
SavedModel / Keras / frozen graphs through tf2onnx (tensorflow.py, an optional extra). Each is imported on use."""
