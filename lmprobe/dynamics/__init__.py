"""Per-example training dynamics from any probe-loss trace — domain-agnostic.

Input: the loss matrix [records x examples] of a trace (often the np.memmap of
run_dir/trace, float16 or float32) and the training step of each record. A record is one
evaluation of every probe example; an example may be a token in context, an image, anything
with a loss. Only losses are used: nothing here knows what an example is.

Notation: for one example, x_t is its loss at record t = 0..R-1 of the window (steps s_t),
p_t = exp(-x_t) the probability the model gives its true target (next token, label).

Dataset Cartography (Swayamdipta et al., 2020)
  confidence      mean_t p_t
  variability     std_t p_t (population std, ddof = 0, as in the paper's code)
  learned_share   share of records with p_t >= 0.5, i.e. x_t <= ln 2. The paper's
                  "correctness" needs the argmax, which losses alone do not give; p >= 0.5
                  guarantees the target is the argmax, so this is a lower bound on it.
                  The threshold is `learned_threshold` (a loss, default ln 2).

Forgetting events (Toneva et al., 2019)
  learned_t           x_t <= learned_threshold
  forgetting_events   number of t >= 1 with learned_{t-1} and not learned_t
  never_learned       learned at no record of the window. Toneva et al. rank such examples
                      as the most forgettable (their code gives them the maximum count); here
                      they keep forgetting_events = 0 and this separate flag, so callers choose.
  unforgettable       learned at some record and never forgotten afterwards
  first_learned_step  step of the first learned record, -1 when never learned

Age of acquisition (after Chang, Tu & Bergen, 2024; Chang & Bergen, 2022)
  The learning curve is x_t against log(1 + s_t). It is smoothed by a centred moving average
  over `smooth` records (default 5, truncated at the window's ends): S_t = mean of x over
  records max(0, t-h)..min(R-1, t+h), h = smooth // 2. start_loss / end_loss (below) give the
  midpoint m = (start_loss + end_loss) / 2. aoa_step is the first step where S crosses m:
  for the first t with S_t <= m, log(1 + aoa) is interpolated linearly in log(1 + step)
  between records t-1 and t (aoa = s_0 when S_0 <= m already). NaN when the curve does not
  drop — start_loss - end_loss must exceed `aoa_min_drop`, by default twice the example's
  own late_loss_std, so that a flat noisy curve is not "acquired" — or never reaches m (it
  always does after a drop, since S's last value is the mean of the last h + 1 records).
  The papers fit a sigmoid in log step
  and take the step where the fit is halfway between its start and its end (minimum); for a
  curve that is such a sigmoid this crossing is the same point, up to the interpolation.
  Unlike a fit, it costs one streaming pass, needs no optimiser and always exists for a drop;
  for a curve that falls, rises and falls again it reports the first crossing, where a fit
  would average the episodes.

Rho-1 classes (Lin et al., 2024)
  start_loss  mean loss over the first `edge` records of the window
  end_loss    mean loss over the last `edge` records (edge = min(5, max(1, R // 10)))
  Each is High (H) when above its threshold, Low (L) otherwise; the class is start->end:
  H->H, L->H, H->L, L->L. The thresholds are `rho1_threshold` (one loss for both) or, by
  default, the median start_loss and the median end_loss over the examples. Class shares are
  reported over examples with finite losses.

Loss summaries
  final_loss     x at the last record of the window
  min_loss       min_t x_t;  mean_loss  mean_t x_t
  loss_std       std_t x_t over the whole window (ddof = 0)
  late_loss_std  within-run variability: std of x over the last quarter of the window's
                 records (at least 2 records, ddof = 0), where training has mostly settled

Non-finite losses: an example with a NaN or infinite loss anywhere in the window gets NaN
statistics, 0 counts, no class and finite = False, and a warning says how many.

Streaming: the matrix is read in blocks of at most `chunk_cells` values (whole rows when a row
fits, so a trace on disk is read sequentially; column chunks otherwise), with per-example
running sums; memory is O(chunk_cells + n_examples), never the matrix. An np.memmap is read
with plain file reads, so a trace far larger than RAM never fills the process's memory.

Entry points:
  example_statistics(losses, steps, *, window=None, learned_threshold=ln 2, ...) -> ExampleStats
  write_parquet(stats, path, keys=None, extra_columns=None)   one row per example
  data_map_figure(stats, path)                                 variability x confidence PNG
  lmprobe.report.examples_table.render_examples / examples_to_json   rich tables, JSON
"""

from lmprobe.dynamics.export import to_table, write_parquet
from lmprobe.dynamics.figure import data_map_figure
from lmprobe.dynamics.stats import (
    DEFINITIONS,
    RHO1_CLASSES,
    ExampleStats,
    example_statistics,
)

__all__ = [
    "DEFINITIONS",
    "RHO1_CLASSES",
    "ExampleStats",
    "data_map_figure",
    "example_statistics",
    "to_table",
    "write_parquet",
]
