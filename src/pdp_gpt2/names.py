"""Names that cross the walls: file and state_dict key names written by one layer and read by
another (the core writes them, data/export/train read them).  A leaf, like errors and atomic:
it imports nothing, so every layer may import it and nobody spells a name twice."""

# Where torch.nn.utils.parametrize puts a parametrized weight's parameter (state_dict key
# "<module>.<ORIGINAL>"); a checkpoint holding such keys still has its masks attached.
ORIGINAL = "parametrizations.weight.original"
# The file that completes a training checkpoint (the driver's and schedule's state; written last).
STATE_FILE = "pdp_state.json"
