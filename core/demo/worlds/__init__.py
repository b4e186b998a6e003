"""Image worlds built from photos that ship in Debian packages: the mini Waterbirds (waterbirds_mini), the general
caption world (general) and the mini ImageNet-9 Backgrounds Challenge (imagenet9_mini)."""
