"""``autolrs``: the learning rate searched on the fly, stage by stage (Jin et al., ICLR 2021, arXiv 2105.10762).

Within each stage a Gaussian process over the log rate proposes rates that are each tried for a
tenth of the stage from the same saved state; each trial's losses are forecast forward with a
decaying exponential, and the stage trains at the best forecast. Written for effsweep from the paper
and the authors' code (github.com/YuchenJin/autolrs); the differences are in docs/schedules.md.
"""

from trainables.step_rules.autolrs._bayes import RateSearch
from trainables.step_rules.autolrs._forecast import exponential_forecast
from trainables.step_rules.autolrs._rule import AutoLRSRule

__all__ = ["AutoLRSRule", "RateSearch", "exponential_forecast"]
