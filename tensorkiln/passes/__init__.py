"""Graph passes: each module is one pass, registered by name; `manager.PassManager` runs a pipeline."""
