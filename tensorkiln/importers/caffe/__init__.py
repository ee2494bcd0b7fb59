"""Caffe importer: deploy.prototxt (text) + .caffemodel (binary), V1 and V2 formats."""
