"""The model seam: plain result types, the one litellm module, the scripted test double."""
