"""deploysignal: an anytime-valid deploy gate for AI-inference services.

Compile a healthy baseline into a frozen config, evaluate canary telemetry tick by tick with detector
families A..E, fuse them under an alpha budget into proceed / extend / rollback, and audit every step.
"""

from ._exceptions import ConfigError, DeploySignalError, InputError, ReplayMismatch, SchemaError

__version__ = "0.4.0"

__all__ = [
    "ConfigError",
    "DeploySignalError",
    "InputError",
    "ReplayMismatch",
    "SchemaError",
    "__version__",
]
