"""Vision tasks (ResNet-18, VGG-11, ViT on CIFAR-10) built on the lmprobe core."""
