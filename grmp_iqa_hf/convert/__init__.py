"""Converters from other formats into this package's models.

`convert_official_checkpoint(path, output_dir, base=None)` turns a checkpoint written by the authors' released
GRMP-IQA code (`torch.save` of a `CustomCLIP` state dict or module) into a saved `GRMPIQAModel`.
"""

from .official import DEFAULT_BASE, convert_official_checkpoint, load_official_checkpoint
from .official_reader import OfficialCheckpointError, RefusedGlobalError, read_official_state_dict

__all__ = [
    "DEFAULT_BASE", "OfficialCheckpointError", "RefusedGlobalError", "convert_official_checkpoint",
    "load_official_checkpoint", "read_official_state_dict",
]
