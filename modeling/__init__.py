"""Model definitions (installed as `grmp_iqa_hf.modeling`). These files are also what `save_pretrained`
copies next to the weights as Hub remote code, so they import only torch, transformers, numpy (and PIL
inside a try block) and each other."""

from .configuration_grmp_iqa import GRMPIQAConfig
from .image_processing_iqa import ImageLoadError, IQAImageProcessor, load_image
from .modeling_grmp_iqa import GRMPIQAModel, GRMPIQAOutput
from .configuration_mp_iqe import MPIQEConfig
from .modeling_mp_iqe import MPIQEModel, MPIQEOutput

__all__ = [
    "GRMPIQAConfig", "GRMPIQAModel", "GRMPIQAOutput", "IQAImageProcessor", "ImageLoadError", "load_image",
    "MPIQEConfig", "MPIQEModel", "MPIQEOutput",
]
