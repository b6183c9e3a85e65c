"""Feature extraction (paper Appendix B): ``run_extract(ExtractConfig)`` writes multi-scale penultimate
descriptors into an HDF5 store; :class:`FeatureStore` reads it (scales aggregated, nets fused, L2)."""

from pipeline.features.config import ExtractConfig
from pipeline.features.descriptor import Net, box_crops, describe, descriptor_scales, image_descriptor, prepare_images
from pipeline.features.run import run_extract
from pipeline.features.store import FeatureStore, summarise_store

__all__ = ["Net", "box_crops", "describe", "image_descriptor", "prepare_images", "descriptor_scales", "ExtractConfig",
           "run_extract", "FeatureStore", "summarise_store"]
