"""grmp-iqa-hf: prompt-learned CLIP models for blind image quality assessment (GRMP-IQA, MP-IQE).

Importing the package registers the models with `AutoConfig` / `AutoModel` / `AutoImageProcessor`, so
that `AutoModel.from_pretrained(dir_or_hub_id)` returns a `GRMPIQAModel` without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .modeling import GRMPIQAConfig, GRMPIQAModel, GRMPIQAOutput, ImageLoadError, IQAImageProcessor, load_image
from .modeling import MPIQEConfig, MPIQEModel, MPIQEOutput

__version__ = "0.1.0"

AutoConfig.register(GRMPIQAConfig.model_type, GRMPIQAConfig, exist_ok=True)
AutoModel.register(GRMPIQAConfig, GRMPIQAModel, exist_ok=True)
AutoConfig.register(MPIQEConfig.model_type, MPIQEConfig, exist_ok=True)
AutoModel.register(MPIQEConfig, MPIQEModel, exist_ok=True)
for _config in (GRMPIQAConfig, MPIQEConfig):
    AutoImageProcessor.register(_config, slow_image_processor_class=IQAImageProcessor, exist_ok=True)

__all__ = [
    "GRMPIQAConfig", "GRMPIQAModel", "GRMPIQAOutput", "IQAImageProcessor", "ImageLoadError", "load_image",
    "MPIQEConfig", "MPIQEModel", "MPIQEOutput",
]
