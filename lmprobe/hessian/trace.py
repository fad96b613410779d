"""Kept for old imports: the trace estimators live in lmprobe.hessian.hutchinson."""

from lmprobe.hessian.hutchinson import TraceEstimate, hutch_plus_plus_trace, hutchinson_trace

__all__ = ["TraceEstimate", "hutch_plus_plus_trace", "hutchinson_trace"]
