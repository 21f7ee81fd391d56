"""Caption sets (CLTS stage 1a): chosen training images captioned by BLIP, kept instead of the images."""
