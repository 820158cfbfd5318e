"""Building blocks that several algorithms share (augmentation combinations, decoders, saliency, diagnostics)."""
