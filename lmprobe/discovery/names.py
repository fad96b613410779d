"""Names and defaults of the discovered keys (light: the CLI imports this when it builds its parser)."""

REPR_KEY = "repr"
SHARP_KEY = "sharp"
DISCOVERY_GROUPINGS = ("repr", "repr-target", "sharp", "sharp-target")
DEFAULT_CLUSTERS = 10  # representation clusters
DEFAULT_DIRECTIONS = 4  # top Hessian eigenvectors for the sharp-direction keys
