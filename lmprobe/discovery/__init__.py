"""Key-free discovery: opposing groups found by what the model sees, not only by keys we thought of.

Two kinds of discovered keys, computed at a checkpoint for any domain whose run view has a
`features` hook (representation) or a loss and Hessian batches (sharp directions), cached in
RUN/analysis/discovery, and mined by the ordinary pair test (`lmprobe mine RUN --by repr`):

  * "repr" (lmprobe.discovery.repr_keys): bounded-memory k-means of the model's own features;
  * "sharp" (lmprobe.discovery.sharp_keys): mirror-image clusters of the examples' slopes along
    the top-k Hessian eigenvectors (POLCA's opposing cluster pairs).

Import what you need from the submodules (command, repr_keys, sharp_keys, cluster, describe):
the package itself imports nothing, so `lmprobe mine` builds its parser without torch.
"""
