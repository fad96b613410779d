"""Mining a probe-loss trace for opposing signals — domain-agnostic.

Input: a loss matrix [records x examples] (often an np.memmap of run_dir/trace), the
training step of each record, and integer keys per example (text: "target" = next token,
"feature" = last context token, optionally "feature2"; vision: class label and a cluster id).
The miner never sees tokens or images; `lmprobe.report.mining_table` turns indices back into
text through a `describe` callable.

What `mine(...)` returns (`MiningResult`):

* movers — per recorded interval, the examples whose loss rose most and fell most (the
  paper's criterion), and over the window each example's largest single-interval rise/fall;
* histogram — the distribution of all per-example loss changes in the window;
* groups — examples grouped by `by` ("target", "feature-target", ...), each with size,
  members and mean loss per record; groups below `min_size` are dropped;
* pairs — opposing pairs: groups agreeing on every key but "target" whose per-interval mean
  loss changes are significantly anti-correlated once the global trend is regressed out;
  also one-vs-rest pairs (a target against every other example sharing its feature, the
  paper's "sky: planes vs non-planes"), reported when stronger than every pair they subsume;
  tested over the whole window and over sliding windows (`windows`), each pair saying where;
* complexity — with a ladder of groupings (target < feature-target < feature2-feature-target),
  per window of training the share of the strongest pairs' strength each grouping explains,
  the complexity index (strength-weighted mean order) and its Kendall trend;
* clusters — beyond the paper: k-means on the detrended change trajectories of the top
  movers, each cluster described by its significantly enriched key values (hypergeometric p,
  Bonferroni-adjusted) and the key kinds that dominate it, plus opposing cluster pairs;
* mode — "groups" (the above) or "cluster" (by="cluster": clusters and their pairs only);
* window_choice — which window was mined and why.

Window: without an explicit window the initial loss collapse is left out (`transient`): early
intervals where every loss falls together give each group a large smooth residual that
swamps the statistics (planted rare-target pairs went missing). An explicit window is used as
given; skip_transient=False keeps the whole trace.

Detrending: each group's series of mean changes is regressed, with an intercept, on the mean
change of all kept examples outside the pair being tested, and the residual is used.
Regression rather than subtraction: subtracting would make a fast learner and a slow learner
look anti-correlated. Outside the pair: a trend containing the two groups themselves makes big
groups (ten CIFAR classes) anti-correlated by construction. For the test (not the score)
intervals are standardised by the cross-sectional spread of the changes (weighted least
squares), since early training moves every loss far more than late training, and residuals
are winsorised at 4 robust standard deviations against heavy-tailed single-example jumps.

Score of a pair: sqrt(-cov(x_a, x_b)) of the two residual series — the geometric mean of the
two groups' shared, opposed swing amplitudes, in loss units per interval. Members' own noise
does not inflate it (it does inflate each group's std, the reported `amp`). Pairs are ranked
by strength = score * sqrt(smaller group's size), which grows with size and swing but not
with noise (see `opposing` for why).

Significance: r = correlation of the standardised residuals (reported as `corr`),
z = atanh(r) * sqrt((n - 4) / v), n = intervals, v = Bartlett's variance factor
1 + 2 * sum_k acf_a(k) acf_b(k) (>= 1), which corrects for autocorrelated changes (i.i.d.
noise in recorded losses gives lag-1 autocorrelation -0.5 in their changes). A pair is kept
when z < Phi^-1(alpha / n_tested) (one-sided, Bonferroni over every candidate pair and
one-vs-rest candidate; with sliding windows, half of alpha for the whole window and half
split over the windows), so pure noise yields no pair with probability about 1 - alpha. Groups need >= min_size members and the
window >= 8 intervals. Cluster pairs use the same rule on intervals held out from k-means.

Calibration, measured on synthetic nulls (25 traces of 60 x 5000 per noise model: i.i.d.,
random-walk, Student-t, heavy-tailed random-walk, decaying noise; plus ten 10% classes
by="target"): null z-scores have mean ~0, std ~1 and Gaussian tails, and with alpha = 0.5 the
mean number of false pairs per trace was 0.28-0.60 for groups and 0.32-0.56 for clusters,
i.e. about alpha as Bonferroni promises.

Streaming: one pass over row blocks (whole rows when they fit in `chunk_cells`, column
chunks otherwise), overlapping by one row, accumulating group sums, top-k movers, histogram
counts and per-example sums; clustering re-reads only its candidate columns. Memory is
O(chunk_cells + examples + records x groups), never the matrix; the records x groups and
intervals x cluster-candidates parts are capped (largest groups / top movers kept, with a
note in `warnings`). Examples with a non-finite loss in the window are skipped with a
warning (the pass is redone without them).

Swings: intervals where both residual series move by more than one std, in opposite
directions.
"""

from lmprobe.mining.clusters import Cluster, ClusterPair, Clusters, Dominance, Enrichment, cluster_movers
from lmprobe.mining.groups import Group, GroupIndex, group_examples
from lmprobe.mining.histogram import Histogram
from lmprobe.mining.inputs import TraceWindow, parse_by, select_window, validate_keys
from lmprobe.mining.mine import find_movers, mine, rest_members
from lmprobe.mining.movers import Movers
from lmprobe.mining.opposing import OpposingPair, PairTest, Swing, find_opposing_pairs
from lmprobe.mining.result import MiningResult
from lmprobe.mining.stats import regress_out
from lmprobe.mining.stream import TraceScan, scan_trace
from lmprobe.mining.transient import WindowChoice, choose_window
from lmprobe.mining.windows import Complexity

__all__ = [
    "Cluster", "ClusterPair", "Clusters", "Complexity", "Dominance", "Enrichment", "Group", "GroupIndex", "Histogram",
    "MiningResult", "Movers", "OpposingPair", "PairTest", "Swing", "TraceScan", "TraceWindow",
    "cluster_movers", "find_movers", "find_opposing_pairs", "group_examples", "mine", "parse_by",
    "WindowChoice", "choose_window", "regress_out", "rest_members", "scan_trace", "select_window", "validate_keys",
]
