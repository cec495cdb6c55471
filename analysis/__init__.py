"""Pure statistics of the silent-zone study (numpy, pandas, scipy, statsmodels; never torch)."""
