"""Benchmarks behind `xlfast bench`: each module measures one hot path beside its named baselines."""
