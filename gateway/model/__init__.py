"""The information model: assets (ISA-95 tree), UCUM units, identifiers, the birth record.

See docs/information-model.md. Nothing here runs per sample: the model is built when a config
is loaded and announced once per change; telemetry only names its version.
"""
