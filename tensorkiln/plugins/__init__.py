"""Plugins: custom layers written in Python, registered by type name, stored in engines as data.

    from tensorkiln.plugins import Plugin, TensorDesc, register_plugin, add_plugin

A plugin is a subclass of `Plugin` (see base.py for the contract) decorated with `@register_plugin("Type")`.
The Caffe importer maps layers of that type to it, the ONNX importer maps nodes of that op type (any
domain) to it with the node's attributes as parameters, and `add_plugin(network, "Type", inputs, params)`
adds one by hand. An engine stores the type name and the parameters (JSON); loading an engine that uses a
plugin not registered in the loading process fails and names the plugin.

Built-in plugins: PriorBox, DetectionOutput, Normalize (SSD), Proposal, ROIPooling (Faster R-CNN).
"""
from .base import DYNAMIC, Plugin, TensorDesc
from .layer import add_plugin, plugin_op
from .registry import (MissingPluginError, UnknownPluginError, check_plugins, find_plugin, get_plugin,
                       plugin_instance, register_plugin, registered_plugins, unregister_plugin)

__all__ = ["DYNAMIC", "Plugin", "TensorDesc", "add_plugin", "plugin_op", "MissingPluginError",
           "UnknownPluginError", "check_plugins", "find_plugin", "get_plugin", "plugin_instance", "register_plugin",
           "registered_plugins", "unregister_plugin"]
