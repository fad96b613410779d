"""Perplexity from per-token negative log-likelihoods, as a local `evaluate` metric.

The hub's "perplexity" metric downloads a model by name; a training run already has the
per-token losses, so this module only averages them: loss = mean NLL (nats), ppl = exp(loss).
"""

import math

import datasets
import evaluate

_DESCRIPTION = "Mean negative log-likelihood (nats) and perplexity of a set of tokens."
_KWARGS_DESCRIPTION = """
Args:
    nll: per-token negative log-likelihoods in nats.
Returns:
    loss: their mean; perplexity: exp(loss); n_tokens: how many were averaged.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TokenPerplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"nll": datasets.Value("float64")}),
        )

    def _compute(self, nll):
        if len(nll) == 0:
            raise ValueError("token_perplexity needs at least one token")
        loss = math.fsum(nll) / len(nll)
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "n_tokens": len(nll)}
