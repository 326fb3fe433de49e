from unimm.models.unified import UnifiedModel

__all__ = ["UnifiedModel"]
