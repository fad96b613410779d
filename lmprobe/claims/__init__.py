"""`lmprobe claims`: the paper's claims as numbers over seeds, each with a 95% interval and a
verdict by a rule fixed here before any run (rules.py), computed by the events, mining and
sharpness code users call (measure.py) on runs launched like a user would (runs.py)."""
