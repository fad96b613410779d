"""Toy problems with planted opposing signals, trained and analysed through lmprobe's domain seam."""
